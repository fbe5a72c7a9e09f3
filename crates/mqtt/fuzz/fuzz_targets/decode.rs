//! Arbitrary bytes through the MQTT codec as a connection would see them: the first byte picks
//! the protocol version, the rest is cut into packets by `check` and each is decoded. A panic,
//! an abort or an allocation over `-malloc_limit_mb` is a crash; so is a decoded packet that
//! fails to encode or does not decode again to itself.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidewater_mqtt::{check, decode, Limits, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let version = if selector & 1 == 0 { ProtocolVersion::V311 } else { ProtocolVersion::V5 };
    // Small limits reach the limit checks with small inputs.
    let limits = if selector & 2 == 0 {
        Limits::default()
    } else {
        Limits {
            max_packet_bytes: 512,
            max_properties: 4,
            max_user_properties: 2,
            max_topic_bytes: 16,
            max_subscriptions_per_packet: 3,
        }
    };
    while let Ok(Some(len)) = check(rest, limits.max_packet_bytes) {
        let (frame, tail) = rest.split_at(len);
        rest = tail;
        let Ok(packet) = decode(Bytes::copy_from_slice(frame), version, &limits) else {
            continue;
        };
        let encoded = match packet.to_bytes(version) {
            Ok(encoded) => encoded,
            Err(error) => panic!("decoded {packet:?} but cannot encode it: {error}"),
        };
        let again = decode(encoded.clone(), version, &Limits { max_packet_bytes: usize::MAX, ..limits });
        assert_eq!(again.as_ref(), Ok(&packet), "re-encoded as {encoded:02x?}");
    }
});
