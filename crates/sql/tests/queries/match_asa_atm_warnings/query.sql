-- ASA's ATM example (Stream Analytics query patterns, "Pattern detection"): at least two
-- warnings after successes. The documentation's query has typos (PARTITON, Succes, a DEFINE
-- named Failure for the Warning variable), fixed here; it skips TO NEXT ROW, which gives one
-- match per success before the warnings (see match_asa_atm_warnings_next_row); PAST LAST ROW
-- gives the one row the documentation shows.
SELECT *
INTO alerts
FROM input TIMESTAMP BY Time OVER ATM_id
MATCH_RECOGNIZE (
    LIMIT DURATION(minute, 1)
    PARTITION BY ATM_id
    MEASURES
        First(Warning.ATM_id) AS ATM_id,
        First(Warning.Operation_Id) AS First_Warning_Operation_id,
        First(Warning.Time) AS Warning_Time
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (Success* Warning{2,})
    DEFINE
        Success AS Success.Return_Code = 'Success',
        Warning AS Warning.Return_Code <> 'Success'
) AS patternMatch
