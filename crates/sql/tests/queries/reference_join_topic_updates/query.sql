-- Stream Analytics' reference data join, the per-device threshold alert: each reading is joined
-- with the thresholds table's row for its device as the table is when the reading is processed
-- ("as of now"). The table is read from a topic keyed by device id (here its records are the
-- @reference lines): a new value replaces the key's row, a tombstone deletes it.
SELECT r.deviceId, r.temperature, t.threshold, System.Timestamp() AS readingTime
INTO alerts
FROM readings r TIMESTAMP BY ts
JOIN thresholds t ON r.deviceId = t.deviceId
WHERE r.temperature > t.threshold
