-- Flink's output mode example (match_recognize.md, "Output Mode"): a rising run and the row that
-- ends it, with the partition column first in the output, then the measures. LAST(A.price, 1)
-- is the A row before the current one. No AFTER MATCH clause: PAST LAST ROW, the default.
SELECT *
INTO runs
FROM Ticker TIMESTAMP BY rowtime
MATCH_RECOGNIZE(
    PARTITION BY symbol
    ORDER BY rowtime
    MEASURES
        FIRST(A.price) AS startPrice,
        LAST(A.price) AS topPrice,
        B.price AS lastPrice
    ONE ROW PER MATCH
    PATTERN (A+ B) WITHIN INTERVAL '1' HOUR
    DEFINE
        A AS LAST(A.price, 1) IS NULL OR A.price > LAST(A.price, 1),
        B AS B.price < LAST(A.price)
)
