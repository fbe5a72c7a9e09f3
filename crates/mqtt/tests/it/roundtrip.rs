//! Property tests: every valid packet of every type survives encode then decode in both
//! versions; arbitrary and mutated bytes never panic the decoder nor make it allocate beyond
//! its limits, and whatever of them decodes re-encodes to the same packet; and `check` answers
//! consistently for every prefix of a buffer.

use std::num::NonZeroU16;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option::of as opt;
use proptest::prelude::*;
use proptest::strategy::Union;
use tidewater_mqtt::{
    check, reason_code_allowed, Auth, ConnAck, Connect, Disconnect, Limits, Packet, PacketType, Properties,
    PropertyContext, PropertyId, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe, Utf8Bytes, Will,
};

use crate::decode_measured;

use ProtocolVersion::{V311, V5};

fn text() -> impl Strategy<Value = Utf8Bytes> {
    "[a-zA-Z0-9 _./:é€-]{0,12}".prop_map(Utf8Bytes::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn topic_name() -> impl Strategy<Value = Utf8Bytes> {
    "[a-zA-Z0-9_$]{1,6}(/[a-zA-Z0-9_ ]{0,6}){0,3}".prop_map(Utf8Bytes::from)
}

fn topic_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![3 => "[a-z0-9]{0,5}", 1 => Just("+".to_string())];
    (vec(level, 1..4), any::<bool>(), opt("[a-z0-9]{1,5}")).prop_map(|(levels, multi_level, share)| {
        let mut filter = levels.join("/");
        if filter.is_empty() {
            filter.push('x');
        }
        if multi_level {
            filter.push_str("/#");
        }
        match share {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter,
        }
    })
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn packet_id() -> impl Strategy<Value = NonZeroU16> {
    (1u16..).prop_map(|value| NonZeroU16::new(value).unwrap_or(NonZeroU16::MIN))
}

fn clear(properties: &mut Properties, id: PropertyId) {
    use PropertyId as Id;
    match id {
        Id::PayloadFormatIndicator => properties.payload_format_indicator = None,
        Id::MessageExpiryInterval => properties.message_expiry_interval_secs = None,
        Id::ContentType => properties.content_type = None,
        Id::ResponseTopic => properties.response_topic = None,
        Id::CorrelationData => properties.correlation_data = None,
        Id::SubscriptionIdentifier => properties.subscription_identifiers.clear(),
        Id::SessionExpiryInterval => properties.session_expiry_interval_secs = None,
        Id::AssignedClientIdentifier => properties.assigned_client_identifier = None,
        Id::ServerKeepAlive => properties.server_keep_alive_secs = None,
        Id::AuthenticationMethod => properties.authentication_method = None,
        Id::AuthenticationData => properties.authentication_data = None,
        Id::RequestProblemInformation => properties.request_problem_information = None,
        Id::WillDelayInterval => properties.will_delay_interval_secs = None,
        Id::RequestResponseInformation => properties.request_response_information = None,
        Id::ResponseInformation => properties.response_information = None,
        Id::ServerReference => properties.server_reference = None,
        Id::ReasonString => properties.reason_string = None,
        Id::ReceiveMaximum => properties.receive_maximum = None,
        Id::TopicAliasMaximum => properties.topic_alias_maximum = None,
        Id::TopicAlias => properties.topic_alias = None,
        Id::MaximumQos => properties.maximum_qos = None,
        Id::RetainAvailable => properties.retain_available = None,
        Id::UserProperty => properties.user_properties.clear(),
        Id::MaximumPacketSize => properties.maximum_packet_size = None,
        Id::WildcardSubscriptionAvailable => properties.wildcard_subscription_available = None,
        Id::SubscriptionIdentifierAvailable => properties.subscription_identifiers_available = None,
        Id::SharedSubscriptionAvailable => properties.shared_subscription_available = None,
    }
}

/// Any valid property block for `context` (empty in 3.1.1).
fn properties(version: ProtocolVersion, context: PropertyContext) -> BoxedStrategy<Properties> {
    if version == V311 {
        return Just(Properties::default()).boxed();
    }
    let first = (
        opt(any::<bool>()),
        opt(any::<u32>()),
        opt(text()),
        opt(topic_name()),
        opt(binary()),
        vec(1u32..=268_435_455, 0..3),
        opt(any::<u32>()),
        opt(text()),
        opt(any::<u16>()),
        opt(text()),
        opt(binary()),
        opt(any::<bool>()),
    );
    let second = (
        opt(any::<u32>()),
        opt(any::<bool>()),
        opt(text()),
        opt(text()),
        opt(text()),
        opt(1u16..),
        opt(any::<u16>()),
        opt(1u16..),
        opt(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        opt(any::<bool>()),
        vec((text(), text()), 0..4),
        opt(1u32..),
    );
    let third = (opt(any::<bool>()), opt(any::<bool>()), opt(any::<bool>()));
    (first, second, third)
        .prop_map(move |(first, second, third)| {
            let mut properties = Properties {
                payload_format_indicator: first.0,
                message_expiry_interval_secs: first.1,
                content_type: first.2,
                response_topic: first.3,
                correlation_data: first.4,
                subscription_identifiers: first.5,
                session_expiry_interval_secs: first.6,
                assigned_client_identifier: first.7,
                server_keep_alive_secs: first.8,
                authentication_method: first.9,
                authentication_data: first.10,
                request_problem_information: first.11,
                will_delay_interval_secs: second.0,
                request_response_information: second.1,
                response_information: second.2,
                server_reference: second.3,
                reason_string: second.4,
                receive_maximum: second.5,
                topic_alias_maximum: second.6,
                topic_alias: second.7,
                maximum_qos: second.8,
                retain_available: second.9,
                user_properties: second.10,
                maximum_packet_size: second.11,
                wildcard_subscription_available: third.0,
                subscription_identifiers_available: third.1,
                shared_subscription_available: third.2,
            };
            for &id in PropertyId::ALL {
                if !id.allowed_in(context) {
                    clear(&mut properties, id);
                }
            }
            if properties.authentication_method.is_none() {
                properties.authentication_data = None; // spec 3.1.2.11.10
            }
            if context == PropertyContext::Subscribe {
                properties.subscription_identifiers.truncate(1);
            }
            properties
        })
        .boxed()
}

fn reason(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let allowed: Vec<ReasonCode> =
        ReasonCode::ALL.iter().copied().filter(|&code| reason_code_allowed(packet, code)).collect();
    proptest::sample::select(allowed)
}

fn connect() -> BoxedStrategy<Packet> {
    prop_oneof![Just(V311), Just(V5)]
        .prop_flat_map(|version| {
            let will =
                (topic_name(), binary(), qos(), any::<bool>(), properties(version, PropertyContext::Will))
                    .prop_map(|(topic, payload, qos, retain, properties)| Will {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties,
                    });
            (
                any::<bool>(),
                any::<u16>(),
                "[a-zA-Z0-9-]{1,23}",
                opt(will),
                opt(text()),
                opt(binary()),
                properties(version, PropertyContext::Connect),
            )
                .prop_map(
                    move |(clean_start, keep_alive_secs, client_id, will, username, password, properties)| {
                        // 3.1.1 needs a user name with a password (MQTT-3.1.2-22).
                        let username = match (version, &username, &password) {
                            (V311, None, Some(_)) => Some("user".into()),
                            _ => username,
                        };
                        Packet::Connect(Box::new(Connect {
                            protocol_version: version,
                            clean_start,
                            keep_alive_secs,
                            client_id: client_id.into(),
                            will,
                            username,
                            password,
                            properties,
                        }))
                    },
                )
        })
        .boxed()
}

/// Any valid packet of a `version` connection other than CONNECT (which carries its own).
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let connack_code: BoxedStrategy<ReasonCode> = match version {
        V311 => proptest::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::UnsupportedProtocolVersion,
            ReasonCode::ClientIdentifierNotValid,
            ReasonCode::ServerUnavailable,
            ReasonCode::BadUserNameOrPassword,
            ReasonCode::NotAuthorized,
        ])
        .boxed(),
        V5 => reason(PacketType::ConnAck).boxed(),
    };
    let connack = (any::<bool>(), connack_code, properties(version, PropertyContext::ConnAck)).prop_map(
        |(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck { session_present, reason_code, properties })
        },
    );
    let publish = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        properties(version, PropertyContext::Publish),
        binary(),
    )
        .prop_map(|(qos, dup, retain, topic, packet_id, properties, payload)| {
            let at_most_once = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic,
                packet_id: (!at_most_once).then_some(packet_id),
                properties,
                payload,
            })
        });
    let response = |packet_type: PacketType, context: PropertyContext| {
        let code = match version {
            V311 => Just(ReasonCode::Success).boxed(),
            V5 => reason(packet_type).boxed(),
        };
        (packet_id(), code, properties(version, context)).prop_map(
            move |(packet_id, reason_code, properties)| {
                let response = PubResponse { packet_id, reason_code, properties };
                match packet_type {
                    PacketType::PubAck => Packet::PubAck(response),
                    PacketType::PubRec => Packet::PubRec(response),
                    PacketType::PubRel => Packet::PubRel(response),
                    _ => Packet::PubComp(response),
                }
            },
        )
    };
    let options = match version {
        V311 => qos().prop_map(SubscriptionOptions::qos).boxed(),
        V5 => (
            qos(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                Just(RetainHandling::SendAtSubscribe),
                Just(RetainHandling::SendAtNewSubscribe),
                Just(RetainHandling::DoNotSend)
            ],
        )
            .prop_map(|(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            })
            .boxed(),
    };
    let subscription = (topic_filter(), options).prop_map(|(filter, mut options)| {
        if filter.starts_with("$share/") {
            options.no_local = false; // MQTT-3.8.3-4
        }
        Subscription { filter: filter.into(), options }
    });
    let subscribe = (packet_id(), properties(version, PropertyContext::Subscribe), vec(subscription, 1..6))
        .prop_map(|(packet_id, properties, subscriptions)| {
            Packet::Subscribe(Subscribe { packet_id, properties, subscriptions })
        });
    let suback_code = match version {
        V311 => proptest::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::GrantedQos1,
            ReasonCode::GrantedQos2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed(),
        V5 => reason(PacketType::SubAck).boxed(),
    };
    let suback = (packet_id(), properties(version, PropertyContext::SubAck), vec(suback_code, 1..6))
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck { packet_id, properties, reason_codes })
        });
    let unsubscribe =
        (packet_id(), properties(version, PropertyContext::Unsubscribe), vec(topic_filter(), 1..6)).prop_map(
            |(packet_id, properties, filters)| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    properties,
                    filters: filters.into_iter().map(Utf8Bytes::from).collect(),
                })
            },
        );
    let unsuback_codes = match version {
        V311 => Just(Vec::new()).boxed(),
        V5 => vec(reason(PacketType::UnsubAck), 1..6).boxed(),
    };
    let unsuback = (packet_id(), properties(version, PropertyContext::UnsubAck), unsuback_codes).prop_map(
        |(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck { packet_id, properties, reason_codes })
        },
    );
    let disconnect_code = match version {
        V311 => Just(ReasonCode::Success).boxed(),
        V5 => reason(PacketType::Disconnect).boxed(),
    };
    let disconnect = (disconnect_code, properties(version, PropertyContext::Disconnect))
        .prop_map(|(reason_code, properties)| Packet::Disconnect(Disconnect { reason_code, properties }));

    let mut all = vec![
        connack.boxed(),
        publish.boxed(),
        response(PacketType::PubAck, PropertyContext::PubAck).boxed(),
        response(PacketType::PubRec, PropertyContext::PubRec).boxed(),
        response(PacketType::PubRel, PropertyContext::PubRel).boxed(),
        response(PacketType::PubComp, PropertyContext::PubComp).boxed(),
        subscribe.boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if version == V5 {
        let auth = (reason(PacketType::Auth), properties(version, PropertyContext::Auth))
            .prop_map(|(reason_code, properties)| Packet::Auth(Auth { reason_code, properties }));
        all.push(auth.boxed());
    }
    Union::new(all).boxed()
}

fn any_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    prop_oneof![
        connect().prop_map(|packet| match &packet {
            Packet::Connect(connect) => (connect.protocol_version, packet),
            _ => (V5, packet),
        }),
        packet(V311).prop_map(|packet| (V311, packet)),
        packet(V5).prop_map(|packet| (V5, packet)),
    ]
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Result<Bytes, TestCaseError> {
    packet.to_bytes(version).map_err(|error| TestCaseError::fail(error.to_string()))
}

/// No single allocation while decoding may exceed this, whatever the input: decoding only
/// allocates `Vec`s bounded by the default limits (and error strings bounded by 65,535 bytes).
const ALLOCATION_BOUND_BYTES: usize = 64 * 1024 + 64;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn every_valid_packet_roundtrips((version, packet) in any_packet()) {
        let bytes = encode(&packet, version)?;
        prop_assert_eq!(check(&bytes, usize::MAX), Ok(Some(bytes.len())));
        let (decoded, _) = decode_measured(bytes.clone(), version, &Limits::default());
        prop_assert_eq!(decoded.as_ref(), Ok(&packet), "bytes {:02x?}", bytes.as_ref());
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_allocate_beyond_the_limits(
        bytes in vec(any::<u8>(), 0..300),
        v5 in any::<bool>(),
    ) {
        let version = if v5 { V5 } else { V311 };
        let limits = Limits::default();
        if let Ok(Some(len)) = check(&bytes, limits.max_packet_bytes) {
            let (_, largest) = decode_measured(Bytes::copy_from_slice(&bytes[..len]), version, &limits);
            prop_assert!(largest <= ALLOCATION_BOUND_BYTES, "{} bytes at once", largest);
        }
        let (_, largest) = decode_measured(Bytes::from(bytes), version, &limits);
        prop_assert!(largest <= ALLOCATION_BOUND_BYTES, "{} bytes at once", largest);
    }

    #[test]
    fn mutated_valid_packets_never_panic_nor_allocate_beyond_the_limits(
        (version, packet) in any_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode(&packet, version)?.to_vec();
        for (idx, value) in flips {
            let at = idx.index(bytes.len());
            bytes[at] = value;
        }
        let limits = Limits::default();
        // Decode the packet as check() cuts it, and the buffer as it is. Whatever decodes must
        // encode again, to bytes that decode to the same packet.
        if let Ok(Some(len)) = check(&bytes, limits.max_packet_bytes) {
            let (decoded, largest) = decode_measured(Bytes::copy_from_slice(&bytes[..len]), version, &limits);
            prop_assert!(largest <= ALLOCATION_BOUND_BYTES, "{} bytes at once", largest);
            if let Ok(decoded) = decoded {
                let encoded = encode(&decoded, version)?;
                let (again, _) = decode_measured(encoded, version, &limits);
                prop_assert_eq!(again, Ok(decoded));
            }
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let (_, largest) = decode_measured(Bytes::from(bytes), version, &limits);
        prop_assert!(largest <= ALLOCATION_BOUND_BYTES, "{} bytes at once", largest);
    }

    /// A prefix of a buffer never contradicts the whole: while `check` says "need more" for the
    /// whole buffer, it says so for every prefix; once it finds a packet of `n` bytes, every
    /// prefix of at least `n` bytes finds the same, and shorter ones need more; an error on the
    /// whole buffer is either the same error on a prefix or "need more".
    #[test]
    fn check_is_consistent_across_prefixes(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..12),
            any_packet().prop_map(|(version, packet)| {
                packet.to_bytes(version).map(|bytes| bytes.to_vec()).unwrap_or_default()
            }),
        ],
        limit in prop_oneof![Just(usize::MAX), 0usize..64],
    ) {
        let whole = check(&bytes, limit);
        for prefix_len in 0..=bytes.len() {
            let prefix = check(&bytes[..prefix_len], limit);
            match &whole {
                Ok(None) => prop_assert_eq!(&prefix, &Ok(None)),
                Ok(Some(n)) if prefix_len >= *n => prop_assert_eq!(&prefix, &Ok(Some(*n))),
                Ok(Some(_)) => prop_assert_eq!(&prefix, &Ok(None)),
                Err(error) => prop_assert!(prefix == Ok(None) || prefix.as_ref() == Err(error)),
            }
        }
    }
}

/// The round-trip property above is only as good as its generators: they must reach every
/// packet type of each version (AUTH only in 5.0) and CONNECTs of both versions.
#[test]
fn the_generators_reach_every_packet_type_in_both_versions() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::HashSet;

    let mut runner = TestRunner::deterministic();
    let mut sample = |strategy: &BoxedStrategy<Packet>| -> Packet {
        strategy.new_tree(&mut runner).unwrap_or_else(|reason| panic!("{reason}")).current()
    };
    for version in [V311, V5] {
        let strategy = packet(version);
        let seen: HashSet<PacketType> = (0..1000).map(|_| sample(&strategy).packet_type()).collect();
        let expected = if version == V5 { 14 } else { 13 };
        assert_eq!(seen.len(), expected, "{version:?}: {seen:?}");
        assert!(!seen.contains(&PacketType::Connect));
    }
    let connects = connect();
    let versions: HashSet<ProtocolVersion> = (0..100)
        .filter_map(|_| match sample(&connects) {
            Packet::Connect(connect) => Some(connect.protocol_version),
            _ => None,
        })
        .collect();
    assert_eq!(versions.len(), 2);
}
