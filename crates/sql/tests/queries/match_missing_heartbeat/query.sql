-- A missing heartbeat: a device that sends every 10 seconds and falls silent for more than 30,
-- reported when it is heard again (a match needs its last row, so a device that never comes
-- back is not reported; a silence longer than LIMIT DURATION is not either). Every beat is
-- tried against the next one of its device.
SELECT deviceId, lastSeen, resumedAt, silentSeconds
INTO gaps
FROM heartbeats TIMESTAMP BY time
MATCH_RECOGNIZE (
    LIMIT DURATION(minute, 5)
    PARTITION BY deviceId
    MEASURES
        Beat.time AS lastSeen,
        Resumed.time AS resumedAt,
        DATEDIFF(second, Beat.time, Resumed.time) AS silentSeconds
    AFTER MATCH SKIP TO NEXT ROW
    PATTERN (Beat Resumed)
    DEFINE
        Resumed AS DATEDIFF(second, Beat.time, Resumed.time) > 30
) AS gap
