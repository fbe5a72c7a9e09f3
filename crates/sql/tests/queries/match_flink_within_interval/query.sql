-- Flink's time constraint example (match_recognize.md, "Time constraint"): a price drop of more
-- than 10 within an hour. (Flink's text lacks the comma between the two DEFINE conditions.)
SELECT *
INTO drops
FROM Ticker TIMESTAMP BY rowtime
MATCH_RECOGNIZE(
    PARTITION BY symbol
    ORDER BY rowtime
    MEASURES
        C.rowtime AS dropTime,
        A.price - C.price AS dropDiff
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A B* C) WITHIN INTERVAL '1' HOUR
    DEFINE
        B AS B.price > A.price - 10,
        C AS C.price < A.price - 10
)
