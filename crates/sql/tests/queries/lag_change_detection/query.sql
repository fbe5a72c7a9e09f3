-- ASA documentation pattern: report when a device's status changes, comparing each event with
-- the previous one of the same device within the last minute.
SELECT deviceId, status,
       LAG(status) OVER (PARTITION BY deviceId LIMIT DURATION(minute, 1)) AS previous,
       eventTime
INTO changes
FROM telemetry TIMESTAMP BY eventTime
WHERE LAG(status) OVER (PARTITION BY deviceId LIMIT DURATION(minute, 1)) <> status
