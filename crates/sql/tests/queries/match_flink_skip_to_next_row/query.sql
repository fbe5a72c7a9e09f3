-- Flink's AFTER MATCH SKIP example (docs/dev/table/sql/queries/match_recognize.md, "After Match
-- Strategy") as Flink writes it, with SKIP TO NEXT ROW. Flink needs no time bound; this engine
-- does (LIMIT DURATION or Flink's WITHIN), so one is added that the example never reaches.
SELECT *
INTO matches
FROM Ticker TIMESTAMP BY rowtime
MATCH_RECOGNIZE (
    PARTITION BY symbol
    ORDER BY rowtime
    MEASURES
        SUM(A.price) AS sumPrice,
        FIRST(rowtime) AS startTime,
        LAST(rowtime) AS endTime
    ONE ROW PER MATCH
    AFTER MATCH SKIP TO NEXT ROW
    PATTERN (A+ C) WITHIN INTERVAL '1' HOUR
    DEFINE
        A AS SUM(A.price) < 30
) AS T
