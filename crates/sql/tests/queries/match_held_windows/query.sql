-- A window over MATCH_RECOGNIZE's rows waits for the matches that belong in it. s2's run of hot
-- readings (4-6 s) is decided by its cold reading at 7 s; s1's run (1-3 s) could grow until s1
-- sends a cold one at 20 s. s2's reading at 15 s moves the input's clock past the window
-- (0, 10 s] meanwhile, but the window stays open while s1's run, stamped 3 s, is undecided,
-- and closes with both runs in it (not once with s2's and again with s1's).
WITH hotRuns AS (
    SELECT * FROM readings TIMESTAMP BY t
    MATCH_RECOGNIZE (
        LIMIT DURATION(second, 30)
        PARTITION BY sensor
        MEASURES FIRST(Hot.t) AS fromTime, LAST(Hot.t) AS toTime, COUNT(*) AS n
        PATTERN (Hot{3,})
        DEFINE Hot AS Hot.v > 50
    ) AS run
)
SELECT * INTO runs FROM hotRuns;
SELECT COUNT(*) AS runs, System.Timestamp() AS windowEnd INTO runsPerWindow FROM hotRuns
GROUP BY TumblingWindow(second, 10)
