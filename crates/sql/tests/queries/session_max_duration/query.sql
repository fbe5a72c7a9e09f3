-- Session windows per user with a 5 second timeout and a 10 second maximum duration. The
-- maximum duration is checked at multiples of 10 seconds (ASA's rule), so a busy session that
-- starts at 1s is cut at 20s and continues in a new session from there.
SELECT user, COUNT(*) AS clicks, MIN(t) AS firstClick, System.Timestamp() AS sessionEnd
INTO sessions
FROM clicks TIMESTAMP BY t
GROUP BY user, SessionWindow(second, 5, 10) OVER (PARTITION BY user)
