-- A stateless query: nested records, arrays, string functions, CASE, CAST, LIKE, ROUND.
SELECT
    UPPER(device.id) AS id,
    device.location.city + '/' + LOWER(device.location.country) AS place,
    GetArrayElement(readings, 0) AS firstReading,
    GetRecordPropertyValue(device, 'location.city') AS city,
    CASE WHEN temp >= 30 THEN 'hot' WHEN temp >= 20 THEN 'warm' ELSE 'cold' END AS band,
    ROUND(temp * 1.8 + 32, 1) AS fahrenheit,
    CAST(temp AS bigint) AS tempInt,
    LEN(device.id) AS idLength,
    SUBSTRING(device.id, 1, 3) AS prefix,
    System.Timestamp() AS at
INTO enriched
FROM telemetry t TIMESTAMP BY ts
WHERE t.temp IS NOT NULL AND device.id LIKE 'dev-%'
