-- The ASA SessionWindow documentation example: click sessions per user with a 2 minute timeout.
SELECT user_id, MIN(time) AS window_start, System.Timestamp() AS window_end,
       DATEDIFF(second, MIN(time), System.Timestamp()) AS duration_in_seconds
INTO sessions
FROM clicks TIMESTAMP BY time
GROUP BY user_id, SessionWindow(minute, 2, 60) OVER (PARTITION BY user_id)
