-- ASA's MATCH_RECOGNIZE reference example: refilling a high-pressure tank must not double its
-- pressure within three minutes. The query is the documented one (the documentation gives no
-- data, so the input is ours). Max(Dangerous.pressure) in Dangerous's DEFINE includes the row
-- being tried; Max(Normal.pressure) reads the rows mapped to Normal so far.
SELECT *
INTO output FROM input TIMESTAMP BY time
MATCH_RECOGNIZE (
    LIMIT DURATION (minute, 3)
    MEASURES
        MAX(Dangerous.pressure) as pressure,
        Classifier() as patterns
    AFTER MATCH SKIP TO NEXT ROW
    PATTERN (Normal+ Dangerous+)
    DEFINE
        Normal AS Normal.isFilling = 1,
        Dangerous AS Max(Dangerous.pressure) > 2* Max(Normal.pressure)
) AS T
