-- Flink's greedy quantifier example (match_recognize.md, "Greedy & Reluctant Quantifiers"): B*
-- takes 12, 13 and 14 although 13 and 14 could each end the match as C.
SELECT *
INTO prices
FROM Ticker TIMESTAMP BY rowtime
MATCH_RECOGNIZE (
    PARTITION BY symbol
    ORDER BY rowtime
    MEASURES
        C.price AS lastPrice
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A B* C) WITHIN INTERVAL '1' HOUR
    DEFINE
        A AS A.price > 10,
        B AS B.price < 15,
        C AS C.price > 12
)
