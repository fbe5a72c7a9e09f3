-- ASA's introductory MATCH_RECOGNIZE example (the reference's first query): Toyotas, maybe
-- Fords, then Lexuses at one toll booth within a minute. The documentation gives no data; the
-- input is ours.
SELECT *
INTO output FROM input TIMESTAMP BY time
    MATCH_RECOGNIZE (
        LIMIT DURATION (minute, 1)
        PARTITION BY tollBoothId
        MEASURES
            Last(Toyota.LicensePlate) AS toyotaLicensePlate,
            Last(Lexus.LicensePlate) AS lexusLicensePlate
        AFTER MATCH SKIP TO NEXT ROW
        PATTERN (Toyota+ Ford* Lexus+)
        DEFINE
            Toyota AS Toyota.make = 'Toyota',
            Ford AS Ford.make = 'Ford',
            Lexus AS Lexus.make = 'Lexus'
    ) AS T
