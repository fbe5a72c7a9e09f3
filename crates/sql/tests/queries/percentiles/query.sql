-- Percentiles per key over a tumbling window (T-SQL definitions: CONT interpolates at
-- p * (n - 1), DISC takes the first value whose cumulative share reaches p).
SELECT k, PERCENTILE_CONT(0.5) OVER (ORDER BY v) AS median, PERCENTILE_DISC(0.9) OVER (ORDER BY v) AS p90
INTO pct
FROM metrics TIMESTAMP BY t
GROUP BY k, TumblingWindow(second, 10)
