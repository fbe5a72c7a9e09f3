-- Two statements on one input without TIMESTAMP BY: event time is the arrival time.
SELECT * INTO everything FROM logs;
SELECT service, message, System.Timestamp() AS arrived INTO errors FROM logs WHERE level = 'error'
