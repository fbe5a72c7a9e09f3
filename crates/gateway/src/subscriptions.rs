//! Which sessions a message goes to: every client's subscriptions, indexed so that matching a
//! topic does not scan them all.
//!
//! Filters without wildcards are looked up by the topic itself. Filters with wildcards are
//! grouped by their first level when it is literal (`sensors/+/temp` under `sensors`), so a
//! topic is matched only against the wildcard filters of its own first level plus those starting
//! with a wildcard. Matching itself is [`tidewater_mqtt::topic::matches`].
//!
//! A shared subscription `$share/{group}/{filter}` (MQTT 5, spec 4.8.2) joins a group; each
//! message matching the filter goes to one member of each group, round robin, preferring
//! members that are connected ([`Subscriptions::matching`] takes that as a predicate).
//!
//! A client with several subscriptions matching one topic gets the message once, at the highest
//! QoS among them, with all their subscription identifiers (spec 3.3.4, which allows this).

use std::collections::{BTreeMap, HashMap};

use tidewater_mqtt::topic::{matches, parse_shared};
use tidewater_mqtt::{QoS, SubscriptionOptions};

/// A session's key in the gateway: the claimed client id (see `mqtt::ClientClaim`).
pub type ClientKey = String;

/// One subscription of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    pub options: SubscriptionOptions,
    /// MQTT 5 Subscription Identifier, echoed on each delivery.
    pub identifier: Option<u32>,
}

/// Where one message goes: a client, at what QoS, with which subscription identifiers, and
/// whether the retain flag is kept (Retain As Published).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub client: ClientKey,
    pub qos: QoS,
    pub identifiers: Vec<u32>,
    pub retain_as_published: bool,
    pub no_local: bool,
}

/// Subscribers of one filter: plain ones by client, shared ones by group.
#[derive(Debug, Default)]
struct FilterEntry {
    clients: BTreeMap<ClientKey, Subscribed>,
    groups: BTreeMap<String, SharedGroup>,
}

impl FilterEntry {
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.groups.is_empty()
    }
}

/// The members of one shared subscription group and whose turn is next.
#[derive(Debug, Default)]
struct SharedGroup {
    members: BTreeMap<ClientKey, Subscribed>,
    next: usize,
}

/// Every subscription in the gateway.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Filters without wildcards, by the topic they match.
    exact: HashMap<String, FilterEntry>,
    /// Filters with wildcards, by their first level when it is literal; "" for those starting
    /// with `+` or `#`.
    wildcard: HashMap<String, BTreeMap<String, FilterEntry>>,
}

/// The filter messages are matched against, and the share group if it is a shared one.
fn split(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Ok(Some(shared)) => (Some(shared.group), shared.filter),
        _ => (None, filter),
    }
}

fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// The wildcard index's bucket of a filter: its first level, unless that is a wildcard.
fn bucket(filter: &str) -> &str {
    let first = filter.split('/').next().unwrap_or("");
    if has_wildcard(first) {
        ""
    } else {
        first
    }
}

impl Subscriptions {
    /// Adds or replaces `client`'s subscription to `filter` (which may be `$share/...`).
    /// Returns whether it already existed (Retain Handling 1 sends retained messages only for a
    /// new one).
    pub fn subscribe(&mut self, client: &str, filter: &str, subscribed: Subscribed) -> bool {
        let (group, inner) = split(filter);
        let entry = if has_wildcard(inner) {
            self.wildcard.entry(bucket(inner).to_string()).or_default().entry(inner.to_string()).or_default()
        } else {
            self.exact.entry(inner.to_string()).or_default()
        };
        let previous = match group {
            None => entry.clients.insert(client.to_string(), subscribed),
            Some(group) => entry
                .groups
                .entry(group.to_string())
                .or_default()
                .members
                .insert(client.to_string(), subscribed),
        };
        previous.is_some()
    }

    /// Removes `client`'s subscription to `filter`; returns whether there was one.
    pub fn unsubscribe(&mut self, client: &str, filter: &str) -> bool {
        let (group, inner) = split(filter);
        let remove = |entry: &mut FilterEntry| -> bool {
            let removed = match group {
                None => entry.clients.remove(client).is_some(),
                Some(group) => {
                    let removed = entry
                        .groups
                        .get_mut(group)
                        .is_some_and(|shared| shared.members.remove(client).is_some());
                    if entry.groups.get(group).is_some_and(|shared| shared.members.is_empty()) {
                        entry.groups.remove(group);
                    }
                    removed
                }
            };
            removed
        };
        if has_wildcard(inner) {
            let key = bucket(inner);
            let Some(filters) = self.wildcard.get_mut(key) else { return false };
            let Some(entry) = filters.get_mut(inner) else { return false };
            let removed = remove(entry);
            if entry.is_empty() {
                filters.remove(inner);
                if filters.is_empty() {
                    self.wildcard.remove(key);
                }
            }
            removed
        } else {
            let Some(entry) = self.exact.get_mut(inner) else { return false };
            let removed = remove(entry);
            if entry.is_empty() {
                self.exact.remove(inner);
            }
            removed
        }
    }

    /// The clients a message on `topic` goes to, one [`Target`] per client. For each shared
    /// group, one member is chosen: the next in turn for which `connected` is true, or the next
    /// in turn if none is.
    pub fn matching(&mut self, topic: &str, connected: impl Fn(&str) -> bool) -> Vec<Target> {
        let mut targets: BTreeMap<ClientKey, Target> = BTreeMap::new();
        let mut add = |client: &str, subscribed: &Subscribed| {
            let target = targets.entry(client.to_string()).or_insert_with(|| Target {
                client: client.to_string(),
                qos: QoS::AtMostOnce,
                identifiers: Vec::new(),
                retain_as_published: false,
                no_local: true,
            });
            target.qos = target.qos.max(subscribed.options.qos);
            target.identifiers.extend(subscribed.identifier);
            target.retain_as_published |= subscribed.options.retain_as_published;
            // Withheld from its publisher only if every matching subscription says No Local.
            target.no_local &= subscribed.options.no_local;
        };
        let mut visit = |entry: &mut FilterEntry| {
            for (client, subscribed) in &entry.clients {
                add(client, subscribed);
            }
            for shared in entry.groups.values_mut() {
                let members: Vec<(&ClientKey, &Subscribed)> = shared.members.iter().collect();
                if members.is_empty() {
                    continue;
                }
                let start = shared.next % members.len();
                let chosen = (0..members.len())
                    .map(|step| (start + step) % members.len())
                    .find(|&index| connected(members[index].0))
                    .unwrap_or(start);
                shared.next = chosen + 1;
                let (client, subscribed) = members[chosen];
                // A shared delivery is never withheld as the publisher's own (spec 3.8.3.1).
                let subscribed = Subscribed {
                    options: SubscriptionOptions { no_local: false, ..subscribed.options },
                    ..*subscribed
                };
                add(client, &subscribed);
            }
        };
        if let Some(entry) = self.exact.get_mut(topic) {
            visit(entry);
        }
        let first = topic.split('/').next().unwrap_or("");
        for key in [first, ""] {
            if let Some(filters) = self.wildcard.get_mut(key) {
                for (filter, entry) in filters.iter_mut() {
                    if matches(topic, filter) {
                        visit(entry);
                    }
                }
            }
            if first.is_empty() {
                break;
            }
        }
        targets.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(qos: QoS) -> Subscribed {
        Subscribed { options: SubscriptionOptions::qos(qos), identifier: None }
    }

    fn clients(targets: &[Target]) -> Vec<String> {
        targets.iter().map(|target| format!("{}@{}", target.client, target.qos as u8)).collect()
    }

    #[test]
    fn exact_and_wildcard_filters_match_once_per_client_at_the_highest_qos() {
        let mut subscriptions = Subscriptions::default();
        subscriptions.subscribe("a", "sport/tennis/player1", at(QoS::AtMostOnce));
        subscriptions.subscribe("a", "sport/#", at(QoS::ExactlyOnce));
        subscriptions.subscribe("b", "+/tennis/+", at(QoS::AtLeastOnce));
        subscriptions.subscribe("c", "news/#", at(QoS::AtLeastOnce));
        subscriptions.subscribe("d", "#", at(QoS::AtMostOnce));
        assert_eq!(clients(&subscriptions.matching("sport/tennis/player1", |_| true)), ["a@2", "b@1", "d@0"]);
        assert_eq!(clients(&subscriptions.matching("sport", |_| true)), ["a@2", "d@0"]);
        assert_eq!(clients(&subscriptions.matching("$SYS/x", |_| true)), Vec::<String>::new());
        assert!(subscriptions.unsubscribe("a", "sport/#"));
        assert!(!subscriptions.unsubscribe("a", "sport/#"));
        assert_eq!(clients(&subscriptions.matching("sport", |_| true)), ["d@0"]);
        assert!(subscriptions.unsubscribe("d", "#"));
        assert!(subscriptions.unsubscribe("b", "+/tennis/+"));
        assert_eq!(clients(&subscriptions.matching("sport/tennis/player1", |_| true)), ["a@0"]);
    }

    #[test]
    fn a_replaced_subscription_reports_that_it_existed() {
        let mut subscriptions = Subscriptions::default();
        assert!(!subscriptions.subscribe("a", "x/+", at(QoS::AtMostOnce)));
        assert!(subscriptions.subscribe("a", "x/+", at(QoS::AtLeastOnce)));
        assert_eq!(clients(&subscriptions.matching("x/y", |_| true)), ["a@1"]);
    }

    #[test]
    fn identifiers_and_no_local_combine() {
        let mut subscriptions = Subscriptions::default();
        let mut options = SubscriptionOptions::qos(QoS::AtLeastOnce);
        options.no_local = true;
        subscriptions.subscribe("a", "t/+", Subscribed { options, identifier: Some(7) });
        subscriptions.subscribe("a", "t/#", Subscribed { options, identifier: Some(9) });
        let mut targets = subscriptions.matching("t/x", |_| true);
        targets[0].identifiers.sort_unstable();
        assert_eq!(targets[0].identifiers, [7, 9]);
        assert!(targets[0].no_local);
        subscriptions.subscribe("a", "t/x", at(QoS::AtMostOnce));
        assert!(!subscriptions.matching("t/x", |_| true)[0].no_local);
    }

    #[test]
    fn a_shared_group_gets_each_message_once_round_robin_preferring_connected_members() {
        let mut subscriptions = Subscriptions::default();
        for client in ["a", "b", "c"] {
            subscriptions.subscribe(client, "$share/g/jobs/+", at(QoS::AtLeastOnce));
        }
        subscriptions.subscribe("z", "jobs/#", at(QoS::AtMostOnce));
        let mut seen = Vec::new();
        for _ in 0..6 {
            let targets = subscriptions.matching("jobs/1", |_| true);
            assert_eq!(targets.len(), 2, "one group member and the plain subscriber");
            seen.extend(targets.into_iter().map(|target| target.client).filter(|client| client != "z"));
        }
        assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);
        let only_c = subscriptions.matching("jobs/1", |client| client == "c");
        assert!(only_c.iter().any(|target| target.client == "c"));
        assert!(subscriptions.unsubscribe("a", "$share/g/jobs/+"));
        assert!(subscriptions.unsubscribe("b", "$share/g/jobs/+"));
        assert!(subscriptions.unsubscribe("c", "$share/g/jobs/+"));
        assert_eq!(clients(&subscriptions.matching("jobs/1", |_| true)), ["z@0"]);
    }
}
