//! Per-device throttling, as IoT Hub's quotas: a rate of messages and a rate of bytes each device
//! may send, a gateway-wide default ([`Quota`], `--device-max-messages-per-second` and
//! `--device-max-bytes-per-second`) that a device's registry record may override
//! ([`Quota::of_device`]).
//!
//! # The bucket
//!
//! A [`Bucket`] is a token bucket kept as the generic cell rate algorithm: per dimension
//! (messages, bytes) one atomic "theoretical arrival time", the moment the sender would have
//! used up everything it sent so far at exactly its rate. Sending `n` units moves it forward by
//! `n / rate`; a sender whose theoretical time runs more than [`BURST`] ahead of the clock is
//! *in debt*, and waits until it is within [`BURST`] again. So a device may send one second's
//! worth at once, and then its rate. The state is a time, not a count of tokens, so a quota
//! changed while a device is sending applies from its next message with no conversion, and a
//! charge is one compare-and-swap per dimension, with no lock. Time is passed in (nanoseconds on
//! any monotonic clock), so the rules are deterministic unit tests.
//!
//! Charges are taken after the fact: a message already read is never refused (nothing is
//! dropped), it only puts its sender in debt, and one message bigger than the burst is still
//! accepted (then paid off by a longer wait). The debt a sender can run up is therefore one
//! message (MQTT) or one request (HTTP) beyond the burst.
//!
//! # Who shares a bucket
//!
//! Every connection and request of one device in this process shares its bucket ([`buckets`],
//! kept for the process's life like [`crate::presence`], so bounded by the registry): a device
//! cannot multiply its quota by opening a second connection or by mixing MQTT and HTTP. Each
//! gateway process throttles on its own; a device behind two gateways has its quota at each.
//! MQTT users and anonymous clients are under the default quota too, with a bucket per
//! connection (their client ids are not bounded by any registry; a client id holds one
//! connection at a time, so this is a bucket per client id).
//!
//! # What throttling does
//!
//! An MQTT connection over its quota stops reading from its socket until it is out of debt
//! ([`Throttle::after_message`]): TCP's own flow control then slows the device, nothing is
//! dropped and nothing is acknowledged before it is durable. The keep-alive deadline moves by the
//! pause, so our own pause never times a client out. An HTTP request from a device in debt is
//! refused with 429 Too Many Requests and `Retry-After` before its body is read, and nothing of
//! it is appended ([`Bucket::debt`]), as IoT Hub's HTTP endpoint throttles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::device::Device;
use crate::presence::PerDevice;

/// How far ahead of its rate a sender may get: a device may send one second's worth of its
/// quota at once before it is paced.
pub const BURST: Duration = Duration::from_secs(1);

/// What a device may send per second; 0 in either field is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub messages_per_second: u64,
    pub bytes_per_second: u64,
}

impl Quota {
    /// No limit at all.
    pub const UNLIMITED: Quota = Quota { messages_per_second: 0, bytes_per_second: 0 };

    pub fn is_unlimited(&self) -> bool {
        self.messages_per_second == 0 && self.bytes_per_second == 0
    }

    /// A device's quota: its record's own limits where it has them (0 there is unlimited, whatever
    /// the default), otherwise the gateway's `default`.
    pub fn of_device(device: &Device, default: Quota) -> Quota {
        Quota {
            messages_per_second: device.max_messages_per_second.unwrap_or(default.messages_per_second),
            bytes_per_second: device.max_bytes_per_second.unwrap_or(default.bytes_per_second),
        }
    }
}

/// One sender's token bucket; see the module documentation.
#[derive(Debug, Default)]
pub struct Bucket {
    /// Theoretical arrival times, nanoseconds on the caller's clock.
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl Bucket {
    /// Charges `n_messages` messages of `n_bytes` bytes in all, sent at `now_nanos`, under
    /// `quota`; returns how long the sender must now wait before sending more (zero while it is
    /// within its burst).
    pub fn charge(&self, quota: Quota, now_nanos: u64, n_messages: u64, n_bytes: u64) -> Duration {
        let messages = charge_lane(&self.messages, quota.messages_per_second, now_nanos, n_messages);
        let bytes = charge_lane(&self.bytes, quota.bytes_per_second, now_nanos, n_bytes);
        messages.max(bytes)
    }

    /// How long the sender must still wait at `now_nanos` before it may send (zero: it may now),
    /// without charging anything.
    pub fn debt(&self, quota: Quota, now_nanos: u64) -> Duration {
        let lane_debt = |lane: &AtomicU64, rate: u64| {
            if rate == 0 {
                return Duration::ZERO;
            }
            wait_after(lane.load(Ordering::Relaxed), now_nanos)
        };
        lane_debt(&self.messages, quota.messages_per_second)
            .max(lane_debt(&self.bytes, quota.bytes_per_second))
    }
}

/// Moves one dimension's theoretical arrival time on by `units` at `rate` per second (nothing for
/// an unlimited rate) and returns the wait that leaves.
fn charge_lane(lane: &AtomicU64, rate: u64, now_nanos: u64, units: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let cost = cost_nanos(units, rate);
    let mut charged = now_nanos;
    // Relaxed: the lane orders nothing else, and a compare-and-swap is never lost.
    let _ = lane.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
        charged = tat.max(now_nanos).saturating_add(cost);
        Some(charged)
    });
    wait_after(charged, now_nanos)
}

/// How long `units` take at `rate` per second, in nanoseconds.
fn cost_nanos(units: u64, rate: u64) -> u64 {
    let nanos = u128::from(units) * 1_000_000_000 / u128::from(rate.max(1));
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// How far a theoretical arrival time runs beyond the burst at `now_nanos`.
fn wait_after(tat_nanos: u64, now_nanos: u64) -> Duration {
    let burst = u64::try_from(BURST.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(tat_nanos.saturating_sub(now_nanos.saturating_add(burst)))
}

/// Nanoseconds on the process's monotonic clock, the one every shared bucket is charged on.
pub fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The buckets of devices, by id, shared by every gateway listener of this process.
#[derive(Debug, Default)]
pub struct Buckets {
    devices: PerDevice<Bucket>,
}

/// The process's table of device buckets.
pub fn buckets() -> &'static Buckets {
    static BUCKETS: OnceLock<Buckets> = OnceLock::new();
    BUCKETS.get_or_init(Buckets::default)
}

impl Buckets {
    /// The device's bucket, made on first use.
    pub fn of_device(&self, device: &str) -> Arc<Bucket> {
        self.devices.get(device)
    }
}

/// One MQTT connection's throttle: the bucket it charges (its device's, or its own) and the
/// quota it charges under, which a device's connection refreshes from the registry at each
/// message ([`Throttle::set_quota`]).
#[derive(Debug)]
pub(crate) struct Throttle {
    bucket: Arc<Bucket>,
    quota: Quota,
}

impl Throttle {
    /// A connection's throttle: `device`'s shared bucket (under `default` until its record is
    /// read at its first message), or for any other client one of its own under `default`.
    pub(crate) fn for_client(device: Option<&str>, default: Quota) -> Option<Throttle> {
        match device {
            Some(device) => Some(Throttle::device(device, default)),
            None => Throttle::connection(default),
        }
    }

    /// A device's connection: the device's shared bucket.
    pub(crate) fn device(device: &str, quota: Quota) -> Throttle {
        Throttle { bucket: buckets().of_device(device), quota }
    }

    /// A connection of a client that is not a device, under `quota`; `None` when that is
    /// unlimited, so such a connection carries nothing.
    pub(crate) fn connection(quota: Quota) -> Option<Throttle> {
        (!quota.is_unlimited()).then(|| Throttle { bucket: Arc::new(Bucket::default()), quota })
    }

    pub(crate) fn set_quota(&mut self, quota: Quota) {
        self.quota = quota;
    }

    /// Charges one message of `bytes` bytes (the whole packet as read); returns how long to stop
    /// reading, if the sender is now over its quota, and counts the pause.
    pub(crate) fn after_message(&self, bytes: usize) -> Option<Duration> {
        if self.quota.is_unlimited() {
            return None;
        }
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let wait = self.bucket.charge(self.quota, now_nanos(), 1, bytes);
        if wait.is_zero() {
            return None;
        }
        crate::metrics::gateway().throttled_mqtt(wait);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn quota(messages_per_second: u64, bytes_per_second: u64) -> Quota {
        Quota { messages_per_second, bytes_per_second }
    }

    /// Sends `n` messages of `bytes` each as fast as the bucket allows, starting at `start`, each
    /// one as soon as the wait the previous one was told is over; returns when each was sent.
    fn send_paced(bucket: &Bucket, quota: Quota, start: u64, n: usize, bytes: u64) -> Vec<u64> {
        let mut now = start;
        let mut sent = Vec::with_capacity(n);
        for _ in 0..n {
            sent.push(now);
            now += u64::try_from(bucket.charge(quota, now, 1, bytes).as_nanos()).unwrap_or(u64::MAX);
        }
        sent
    }

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let bucket = Bucket::default();
        let sent = send_paced(&bucket, quota(20, 0), 0, 100, 10);
        // The first 21 go at once (the burst, plus the one that puts the sender in debt)...
        assert!(sent[..21].iter().all(|&at| at == 0), "{:?}", &sent[..22]);
        // ... then one every 50 ms: message k (from 0) is sent at k * 50 ms - 1 s.
        for (index, &at) in sent.iter().enumerate().skip(21) {
            assert_eq!(at, index as u64 * 50 * MS - SECOND, "message {index}");
        }
        // So 100 messages take (100 - 20 - 1) / 20 s.
        assert_eq!(sent[99], 3_950 * MS);
    }

    #[test]
    fn an_idle_bucket_refills_up_to_the_burst_and_no_further() {
        let bucket = Bucket::default();
        let limit = quota(10, 0);
        send_paced(&bucket, limit, 0, 30, 0);
        // Ten seconds of silence give back one burst, not ten.
        let sent = send_paced(&bucket, limit, 20 * SECOND, 15, 0);
        let at_once = sent.iter().filter(|&&at| at == 20 * SECOND).count();
        assert_eq!(at_once, 11);
    }

    #[test]
    fn bytes_are_paced_like_messages_and_the_stricter_limit_decides() {
        let bucket = Bucket::default();
        // 1000 bytes/s with 250-byte messages: 4 messages a second, though 100 are allowed.
        let sent = send_paced(&bucket, quota(100, 1000), 0, 12, 250);
        assert_eq!(sent[4], 0, "a burst of 1000 bytes, plus the message that goes into debt");
        assert_eq!(sent[5], 250 * MS);
        assert_eq!(sent[11], 1750 * MS);
    }

    #[test]
    fn a_message_larger_than_the_burst_is_taken_and_paid_off_after() {
        let bucket = Bucket::default();
        let limit = quota(0, 100);
        // 500 bytes at 100 bytes/s: accepted now, then 4 s of debt beyond the 1 s burst.
        assert_eq!(bucket.charge(limit, 0, 1, 500), Duration::from_secs(4));
        assert_eq!(bucket.debt(limit, 0), Duration::from_secs(4));
        assert_eq!(bucket.debt(limit, 3 * SECOND), Duration::from_secs(1));
        assert_eq!(bucket.debt(limit, 4 * SECOND), Duration::ZERO);
    }

    #[test]
    fn debt_charges_nothing_and_unlimited_lanes_never_wait() {
        let bucket = Bucket::default();
        assert_eq!(bucket.debt(quota(1, 1), 0), Duration::ZERO);
        assert_eq!(bucket.debt(quota(1, 1), 0), Duration::ZERO, "asking is free");
        assert_eq!(bucket.charge(Quota::UNLIMITED, 0, 1_000_000, u64::MAX), Duration::ZERO);
        assert_eq!(bucket.debt(quota(1, 1), 0), Duration::ZERO, "an unlimited charge leaves no debt");
        // Two messages at 1/s: the second goes into debt by one second.
        assert_eq!(bucket.charge(quota(1, 0), 0, 2, 0), Duration::from_secs(1));
        assert_eq!(bucket.debt(quota(0, 5), 0), Duration::ZERO, "a lane without a limit has no debt");
    }

    #[test]
    fn a_changed_quota_applies_from_the_next_message() {
        let bucket = Bucket::default();
        // In debt at 1 message/s...
        assert_eq!(bucket.charge(quota(1, 0), 0, 3, 0), Duration::from_secs(2));
        // ... the debt stays (it is time already owed), but new messages cost the new rate.
        assert_eq!(bucket.charge(quota(1000, 0), 0, 1, 0), Duration::from_millis(2001));
    }

    #[test]
    fn the_device_record_overrides_the_default_field_by_field() {
        let default = quota(50, 10_000);
        let mut device = Device::new("pump-1", "key", [1; 16], 0);
        assert_eq!(Quota::of_device(&device, default), default);
        device.max_messages_per_second = Some(5);
        assert_eq!(Quota::of_device(&device, default), quota(5, 10_000));
        device.max_bytes_per_second = Some(0);
        assert_eq!(Quota::of_device(&device, default), quota(5, 0), "0 in the record is unlimited");
    }

    #[test]
    fn a_device_shares_one_bucket_and_other_clients_get_their_own() {
        let table = Buckets::default();
        assert!(Arc::ptr_eq(&table.of_device("a"), &table.of_device("a")));
        assert!(!Arc::ptr_eq(&table.of_device("a"), &table.of_device("b")));
        assert!(Throttle::connection(Quota::UNLIMITED).is_none());
        assert!(Throttle::connection(quota(1, 0)).is_some());
    }

    #[test]
    fn huge_charges_saturate_instead_of_wrapping() {
        let bucket = Bucket::default();
        let wait = bucket.charge(quota(1, 0), u64::MAX - 5, u64::MAX, 0);
        assert_eq!(wait, Duration::ZERO, "saturated at the clock's end, which is within the burst");
        assert_eq!(cost_nanos(u64::MAX, 1), u64::MAX);
    }
}
