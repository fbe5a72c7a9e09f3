-- Flink's first MATCH_RECOGNIZE example (match_recognize.md, "Examples"): periods of a falling
-- price, each ended by a rise. Flink writes AFTER MATCH SKIP TO LAST PRICE_UP, which this engine
-- does not support; with SKIP PAST LAST ROW the documented output is the same one row. Flink's
-- own spellings (ORDER BY, ONE ROW PER MATCH, WITHIN) are accepted.
SELECT *
INTO drops
FROM Ticker TIMESTAMP BY rowtime
MATCH_RECOGNIZE (
    PARTITION BY symbol
    ORDER BY rowtime
    MEASURES
        START_ROW.rowtime AS start_tstamp,
        LAST(PRICE_DOWN.rowtime) AS bottom_tstamp,
        LAST(PRICE_UP.rowtime) AS end_tstamp
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (START_ROW PRICE_DOWN+ PRICE_UP) WITHIN INTERVAL '1' MINUTE
    DEFINE
        PRICE_DOWN AS
            (LAST(PRICE_DOWN.price, 1) IS NULL AND PRICE_DOWN.price < START_ROW.price) OR
                PRICE_DOWN.price < LAST(PRICE_DOWN.price, 1),
        PRICE_UP AS
            PRICE_UP.price > LAST(PRICE_DOWN.price, 1)
) MR
