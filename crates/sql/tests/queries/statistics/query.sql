-- Every aggregate at once, with epoch-millisecond timestamps.
SELECT k, SUM(v) AS total, MIN(v) AS low, MAX(v) AS high, STDEV(v) AS sd, VAR(v) AS variance,
       STDEVP(v) AS sdp, COUNT(v) AS counted, COUNT(*) AS events
INTO stats
FROM metrics TIMESTAMP BY t
GROUP BY k, TumblingWindow(minute, 1)
