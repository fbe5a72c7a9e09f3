//! Model-based: random sequences of PUBLISH (QoS 0-2, own or another device's topic, packet ids
//! drawn from a small set so they repeat), PUBREL and PINGREQ go to a real gateway over a
//! socket; what it answers and what it appends must equal a few lines of model. The model is
//! the session contract: QoS 2 ids are remembered from PUBLISH to PUBREL and a repeat is not
//! appended again, refusals are acknowledged with Not authorized (MQTT 5), and every answer
//! comes back in request order.

use std::num::NonZeroU16;

use proptest::prelude::*;
use tidewater_mqtt::{Packet, Properties, ProtocolVersion, PubResponse, QoS, ReasonCode};

use super::{show, start, Client, KEY};
use tidewater_gateway::MqttConfig;

#[derive(Debug, Clone)]
enum Step {
    Publish { qos: u8, packet_id: u16, own_topic: bool },
    PubRel { packet_id: u16 },
    Ping,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..=2, 1u16..=4, prop::bool::weighted(0.8))
            .prop_map(|(qos, packet_id, own_topic)| Step::Publish { qos, packet_id, own_topic }),
        2 => (1u16..=4).prop_map(|packet_id| Step::PubRel { packet_id }),
        1 => Just(Step::Ping),
    ]
}

/// What the gateway should answer and append for `steps`.
fn model(steps: &[Step]) -> (Vec<String>, Vec<String>) {
    let mut answers = Vec::new();
    let mut appended = Vec::new();
    let mut awaiting_release = std::collections::HashSet::new();
    for (idx, step) in steps.iter().enumerate() {
        match *step {
            Step::Publish { qos, packet_id, own_topic } => {
                let refused = "Not authorized (0x87)";
                match (qos, own_topic) {
                    (0, true) => appended.push(format!("m{idx}")),
                    (0, false) => {}
                    (1, true) => {
                        appended.push(format!("m{idx}"));
                        answers.push(format!("PUBACK {packet_id} Success (0x00)"));
                    }
                    (1, false) => answers.push(format!("PUBACK {packet_id} {refused}")),
                    (_, true) => {
                        if awaiting_release.insert(packet_id) {
                            appended.push(format!("m{idx}"));
                        }
                        answers.push(format!("PUBREC {packet_id} Success (0x00)"));
                    }
                    (_, false) => {
                        // A repeat of an id awaiting PUBREL is acknowledged as the original was.
                        if awaiting_release.contains(&packet_id) {
                            answers.push(format!("PUBREC {packet_id} Success (0x00)"));
                        } else {
                            answers.push(format!("PUBREC {packet_id} {refused}"));
                        }
                    }
                }
            }
            Step::PubRel { packet_id } => {
                let code = if awaiting_release.remove(&packet_id) {
                    "Success (0x00)"
                } else {
                    "Packet Identifier not found (0x92)"
                };
                answers.push(format!("PUBCOMP {packet_id} {code}"));
            }
            Step::Ping => answers.push("PingResp".to_string()),
        }
    }
    (answers, appended)
}

async fn run(steps: &[Step]) -> (Vec<String>, Vec<String>) {
    let gateway = start(MqttConfig::default()).await;
    let (mut client, _) = Client::connect(&gateway, ProtocolVersion::V5, "pump-1", Some(KEY)).await;
    for (idx, step) in steps.iter().enumerate() {
        match *step {
            Step::Publish { qos, packet_id, own_topic } => {
                let topic = if own_topic {
                    "devices/pump-1/messages/events/"
                } else {
                    "devices/pump-2/messages/events/"
                };
                let qos = QoS::from_u8(qos).expect("0 to 2");
                let packet_id = if qos == QoS::AtMostOnce { 0 } else { packet_id };
                client.publish(topic, qos, packet_id, &format!("m{idx}")).await;
            }
            Step::PubRel { packet_id } => {
                let release = PubResponse {
                    packet_id: NonZeroU16::new(packet_id).expect("non-zero"),
                    reason_code: ReasonCode::Success,
                    properties: Properties::default(),
                };
                client.send(&Packet::PubRel(release)).await;
            }
            Step::Ping => client.send(&Packet::PingReq).await,
        }
    }
    // A last PINGREQ: its answer comes after everything before it was handled (QoS 0 included,
    // which has no answer of its own).
    client.send(&Packet::PingReq).await;
    let (expected_answers, _) = model(steps);
    let mut answers = Vec::new();
    for _ in 0..expected_answers.len() {
        answers.push(show(client.receive().await));
    }
    assert_eq!(show(client.receive().await), "PingResp");
    let appended = gateway
        .appender
        .messages()
        .iter()
        .map(|message| String::from_utf8_lossy(&message.payload).into_owned())
        .collect();
    (answers, appended)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_connection_follows_the_session_model(steps in prop::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (answers, appended) = runtime.block_on(run(&steps));
        let (expected_answers, expected_appended) = model(&steps);
        prop_assert_eq!(answers, expected_answers);
        prop_assert_eq!(appended, expected_appended);
    }
}
