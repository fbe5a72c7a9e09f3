-- Events within the out-of-order tolerance are held until the watermark reaches them and then
-- fed in event-time order, so LAG sees the order of event time, not of arrival.
SELECT v, LAG(v) OVER (LIMIT DURATION(minute, 1)) AS previous, System.Timestamp() AS at
INTO ordered
FROM readings TIMESTAMP BY ts
