-- Flink's aggregation example (match_recognize.md, "Aggregations"): the longest periods in which
-- the average price stays below 15. AVG(A.price) in A's DEFINE includes the row being tried.
SELECT *
INTO periods
FROM Ticker TIMESTAMP BY rowtime
MATCH_RECOGNIZE (
    PARTITION BY symbol
    ORDER BY rowtime
    MEASURES
        FIRST(A.rowtime) AS start_tstamp,
        LAST(A.rowtime) AS end_tstamp,
        AVG(A.price) AS avgPrice
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A+ B) WITHIN INTERVAL '1' HOUR
    DEFINE
        A AS AVG(A.price) < 15
) MR
