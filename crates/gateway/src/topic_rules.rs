//! Topic rules: what an MQTT client that is not a device (a SCRAM user, or an anonymous client
//! where `--mqtt-allow-anonymous` lets them in) may publish and subscribe to, as Mosquitto's
//! `acl_file` and EMQX's authorization rules. Pure: the rules and the client in, a decision out.
//!
//! A rule is *who* (a user name, a client id, anonymous clients, or everyone that is not a
//! device), *allow* or *deny*, *what* (publish, subscribe or both) and a topic filter with MQTT's
//! `+` and `#` and the placeholders `%u` (the user name) and `%c` (the client id).
//!
//! # How a PUBLISH or SUBSCRIBE is decided
//!
//! 1. **No rule, no change.** A client is *restricted* only once a rule exists for its kind:
//!    for a user, a rule for any user, any client id or everyone; for an anonymous client, a
//!    rule for anonymous clients, any client id or everyone. An unrestricted client may do what
//!    it could before rules existed (anything outside `devices/`), so brokers that never add a
//!    rule behave as they always did; adding the first rule for a kind turns that kind to deny
//!    by default, as Mosquitto does once it has an `acl_file`.
//! 2. **The rules that apply**: those for the client (its user name, its client id, anonymous if
//!    it is, or everyone), for the action, whose filter (placeholders replaced) matches. For a
//!    PUBLISH the filter must match the topic. For a SUBSCRIBE the rule's filter must *cover*
//!    the requested filter: every topic the requested filter can match, the rule's matches too
//!    (`a/#` covers `a/+/b` and `a`; `a/+` does not cover `a/#`). A shared subscription
//!    (`$share/GROUP/filter`) is decided on its filter. A rule whose placeholder would be
//!    replaced by a name containing `+`, `#` or `/` never applies, so nobody widens a rule by
//!    choosing their client id (Mosquitto refuses such names for the same reason).
//! 3. **The most specific rule decides**, by its filter: more literal levels first, then more
//!    `+` levels, then a filter without `#` before one with it (`a/b` > `a/+` > `a/#` > `#`).
//!    Who the rule is for does not count. **At equal specificity a deny wins.**
//! 4. **No rule applies: denied.**
//!
//! So `deny everyone subscribe test/nosubscribe` with `allow anonymous all #` refuses exactly
//! that subscription, and `allow user alice publish sensors/%u/#` lets alice publish under
//! `sensors/alice/` only.
//!
//! Rules apply to users and anonymous clients, never to devices: a device's topics are fixed by
//! its identity ([`crate::route`]).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use tidewater_mqtt::topic::{matches, parse_shared, validate_topic_filter};

/// The key prefix of topic rules in the gateway's registry topic (`_tidewater_devices`). Device
/// ids never contain `/`, so rules and devices never collide.
pub const RULE_KEY_PREFIX: &str = "mqtt-rule/";

/// The longest rule filter, and the longest name a rule is for.
pub const RULE_TEXT_BYTES_MAX: usize = 1024;

/// Who a rule is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Subject {
    /// A SCRAM user, by name.
    User(String),
    /// A client, user or anonymous, by its MQTT client id.
    Client(String),
    /// Every anonymous client.
    Anonymous,
    /// Every client that is not a device: users and anonymous clients.
    Everyone,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Allow,
    Deny,
}

impl Permission {
    /// As `tidewater mqtt-acl` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Allow => "allow",
            Permission::Deny => "deny",
        }
    }
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Publish,
    Subscribe,
    /// Publish and subscribe.
    All,
}

impl Action {
    /// As `tidewater mqtt-acl` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::All => "all",
        }
    }

    fn covers(self, action: Action) -> bool {
        self == Action::All || self == action
    }
}

/// One topic rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicRule {
    pub subject: Subject,
    pub permission: Permission,
    pub action: Action,
    /// A topic filter, possibly with `%u` and `%c`.
    pub filter: String,
}

/// Why a rule cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("the filter {filter:?} is not a valid MQTT topic filter: {reason}")]
    Filter { filter: String, reason: String },
    #[error("the name is empty or longer than {RULE_TEXT_BYTES_MAX} bytes")]
    Name,
}

impl TopicRule {
    /// Checks the filter and name; what `tidewater mqtt-acl add` refuses.
    pub fn validate(&self) -> Result<(), RuleError> {
        if let Subject::User(name) | Subject::Client(name) = &self.subject {
            if name.is_empty() || name.len() > RULE_TEXT_BYTES_MAX {
                return Err(RuleError::Name);
            }
        }
        // Placeholders stand for one level's text: replaced by a plain letter they must leave a
        // valid filter.
        let plain = self.filter.replace("%u", "u").replace("%c", "c");
        validate_topic_filter(&plain, RULE_TEXT_BYTES_MAX)
            .map_err(|error| RuleError::Filter { filter: self.filter.clone(), reason: error.to_string() })?;
        if plain.starts_with("$share/") {
            return Err(RuleError::Filter {
                filter: self.filter.clone(),
                reason: "a rule names the topics, not a shared subscription's group".to_string(),
            });
        }
        Ok(())
    }

    /// The rule's key in the registry topic: the rule itself, so adding it twice is one rule and
    /// removing names it the same way.
    pub fn key(&self) -> String {
        let subject = match &self.subject {
            Subject::User(name) => format!("user:{name}"),
            Subject::Client(id) => format!("client:{id}"),
            Subject::Anonymous => "anonymous".to_string(),
            Subject::Everyone => "everyone".to_string(),
        };
        let (permission, action) = (self.permission.name(), self.action.name());
        format!("{RULE_KEY_PREFIX}{subject}\u{0}{permission}\u{0}{action}\u{0}{}", self.filter)
    }

    fn applies_to(&self, client: &Client<'_>) -> bool {
        match (&self.subject, client.user) {
            (Subject::User(name), Some(user)) => name == user,
            (Subject::User(_), None) => false,
            (Subject::Client(id), _) => id == client.client_id,
            (Subject::Anonymous, user) => user.is_none(),
            (Subject::Everyone, _) => true,
        }
    }

    /// Whether this rule counts towards restricting clients of `user`'s kind.
    fn restricts(&self, user: Option<&str>) -> bool {
        match self.subject {
            Subject::User(_) => user.is_some(),
            Subject::Anonymous => user.is_none(),
            Subject::Client(_) | Subject::Everyone => true,
        }
    }

    /// The filter with `%u` and `%c` replaced, or `None` where a placeholder cannot be (an
    /// anonymous client has no user name) or its value holds `+`, `#` or `/`.
    fn filter_for(&self, client: &Client<'_>) -> Option<String> {
        // One pass, so a value that itself holds `%c` is not replaced again.
        let mut filter = String::with_capacity(self.filter.len());
        let mut rest = self.filter.as_str();
        while let Some(idx) = rest.find('%') {
            filter.push_str(&rest[..idx]);
            let after = &rest[idx + 1..];
            let value = match after.as_bytes().first() {
                Some(b'u') => Some(client.user?),
                Some(b'c') => Some(client.client_id),
                _ => None,
            };
            match value {
                Some(value) if value.contains(['+', '#', '/']) => return None,
                Some(value) => {
                    filter.push_str(value);
                    rest = &after[1..];
                }
                None => {
                    filter.push('%');
                    rest = after;
                }
            }
        }
        filter.push_str(rest);
        Some(filter)
    }
}

/// Who is asking: the user name (none for an anonymous client) and the client id.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub user: Option<&'a str>,
    pub client_id: &'a str,
}

/// The rule that decided, or why none did; [`Decision::allowed`] is the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// No rule exists for the client's kind: as before rules existed.
    Unrestricted,
    /// The most specific applying rule.
    Rule(&'a TopicRule),
    /// Rules exist for the client's kind but none applies.
    NoRule,
}

impl Decision<'_> {
    pub fn allowed(&self) -> bool {
        match self {
            Decision::Unrestricted => true,
            Decision::Rule(rule) => rule.permission == Permission::Allow,
            Decision::NoRule => false,
        }
    }
}

/// Decides whether `client` may `action` (publish or subscribe) `topic_or_filter` (a topic name
/// for publish, a filter, maybe `$share/`, for subscribe) under `rules`, as the module
/// documentation says.
pub fn decide<'a>(
    rules: impl IntoIterator<Item = &'a TopicRule>,
    client: Client<'_>,
    action: Action,
    topic_or_filter: &str,
) -> Decision<'a> {
    let inner = match action {
        Action::Subscribe => {
            parse_shared(topic_or_filter).ok().flatten().map_or(topic_or_filter, |shared| shared.filter)
        }
        _ => topic_or_filter,
    };
    let mut restricted = false;
    let mut best: Option<(Specificity, &'a TopicRule)> = None;
    for rule in rules {
        restricted |= rule.restricts(client.user);
        if !rule.action.covers(action) || !rule.applies_to(&client) {
            continue;
        }
        let Some(filter) = rule.filter_for(&client) else { continue };
        let applies = match action {
            Action::Subscribe => covers(&filter, inner),
            _ => matches(inner, &filter),
        };
        if !applies {
            continue;
        }
        let specificity = Specificity::of(&filter);
        let better = match &best {
            None => true,
            Some((best_specificity, best_rule)) => match specificity.cmp(best_specificity) {
                Ordering::Greater => true,
                Ordering::Equal => {
                    rule.permission == Permission::Deny && best_rule.permission == Permission::Allow
                }
                Ordering::Less => false,
            },
        };
        if better {
            best = Some((specificity, rule));
        }
    }
    match best {
        Some((_, rule)) => Decision::Rule(rule),
        None if restricted => Decision::NoRule,
        None => Decision::Unrestricted,
    }
}

/// How specific a filter is: literal levels, then `+` levels, then no `#` over `#`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity {
    literal_levels: usize,
    single_level_wildcards: usize,
    exact_depth: bool,
}

impl Specificity {
    fn of(filter: &str) -> Specificity {
        let mut specificity = Specificity { literal_levels: 0, single_level_wildcards: 0, exact_depth: true };
        for level in filter.split('/') {
            match level {
                "+" => specificity.single_level_wildcards += 1,
                "#" => specificity.exact_depth = false,
                _ => specificity.literal_levels += 1,
            }
        }
        specificity
    }
}

/// Whether every topic that `requested` (a valid filter) matches, `rule` (a valid filter)
/// matches too.
pub fn covers(rule: &str, requested: &str) -> bool {
    // A filter starting with a wildcard never matches `$` topics (MQTT-4.7.2-1), so it cannot
    // cover a filter that names them.
    if requested.starts_with('$') && rule.starts_with(['+', '#']) {
        return false;
    }
    let mut rule_levels = rule.split('/');
    let mut requested_levels = requested.split('/');
    loop {
        match (rule_levels.next(), requested_levels.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            // The rule ends first: it matches nothing deeper. The request ends first: only a
            // rule's trailing `#` (which matches its parent level too) still matches.
            (None, Some(_)) => return false,
            (Some(_), None) => return false,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(_), Some("+")) => return false,
            (Some(rule_level), Some(requested_level)) => {
                if rule_level != requested_level {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> TopicRule {
        // "deny user:alice publish a/b": a compact way to write a rule in a test.
        let parts: Vec<&str> = text.split(' ').collect();
        let permission = if parts[0] == "allow" { Permission::Allow } else { Permission::Deny };
        let subject = match parts[1].split_once(':') {
            Some(("user", name)) => Subject::User(name.to_string()),
            Some(("client", id)) => Subject::Client(id.to_string()),
            _ if parts[1] == "anonymous" => Subject::Anonymous,
            _ => Subject::Everyone,
        };
        let action = match parts[2] {
            "publish" => Action::Publish,
            "subscribe" => Action::Subscribe,
            _ => Action::All,
        };
        TopicRule { subject, permission, action, filter: parts[3].to_string() }
    }

    /// Each case: who (`alice/c1` for user alice with client id c1, `-/c1` for anonymous), the
    /// action, the topic or filter, and the expected answer with the deciding rule's filter (as
    /// written, placeholders and all).
    fn check(rules: &[&str], cases: &[(&str, &str, &str, &str)]) {
        let rules: Vec<TopicRule> = rules.iter().map(|text| rule(text)).collect();
        for rule in &rules {
            assert_eq!(rule.validate(), Ok(()), "{rule:?}");
        }
        for (who, action, topic, expected) in cases {
            let (user, client_id) = who.split_once('/').unwrap_or((*who, *who));
            let client = Client { user: (user != "-").then_some(user), client_id };
            let action = if *action == "pub" { Action::Publish } else { Action::Subscribe };
            let decision = decide(&rules, client, action, topic);
            let actual = match &decision {
                Decision::Unrestricted => "unrestricted".to_string(),
                Decision::NoRule => "denied (no rule)".to_string(),
                Decision::Rule(rule) => {
                    format!("{} by {}", if decision.allowed() { "allowed" } else { "denied" }, rule.filter)
                }
            };
            assert_eq!(&actual, expected, "{who} {action:?} {topic}");
        }
    }

    #[test]
    fn no_rules_for_a_kind_leave_it_as_it_was() {
        check(&[], &[("alice/c1", "pub", "a", "unrestricted"), ("-/c1", "sub", "#", "unrestricted")]);
        // A user rule restricts users only; an anonymous rule anonymous clients only.
        check(
            &["allow user:bob all #"],
            &[("alice/c1", "pub", "a", "denied (no rule)"), ("-/c1", "pub", "a", "unrestricted")],
        );
        check(
            &["deny anonymous subscribe x"],
            &[("alice/c1", "pub", "a", "unrestricted"), ("-/c1", "pub", "a", "denied (no rule)")],
        );
        // Client id and everyone rules restrict both kinds.
        check(
            &["allow client:c9 all #"],
            &[("alice/c1", "pub", "a", "denied (no rule)"), ("-/c1", "pub", "a", "denied (no rule)")],
        );
    }

    #[test]
    fn the_most_specific_rule_decides_and_deny_wins_ties() {
        let rules = [
            "allow anonymous all #",
            "deny everyone subscribe test/nosubscribe",
            "deny anonymous publish secret/#",
            "allow anonymous publish secret/open/+",
            "allow anonymous publish tie/+",
            "deny anonymous publish +/x",
        ];
        check(
            &rules,
            &[
                ("-/c", "sub", "test/nosubscribe", "denied by test/nosubscribe"),
                ("-/c", "sub", "$share/g/test/nosubscribe", "denied by test/nosubscribe"),
                ("-/c", "sub", "test/+", "allowed by #"),
                ("-/c", "sub", "#", "allowed by #"),
                ("-/c", "pub", "test/nosubscribe", "allowed by #"),
                ("-/c", "pub", "secret", "denied by secret/#"),
                ("-/c", "pub", "secret/a/b", "denied by secret/#"),
                ("-/c", "pub", "secret/open/door", "allowed by secret/open/+"),
                ("-/c", "pub", "secret/open/door/2", "denied by secret/#"),
                // tie/+ and +/x are equally specific: the deny wins.
                ("-/c", "pub", "tie/x", "denied by +/x"),
                ("-/c", "pub", "tie/y", "allowed by tie/+"),
            ],
        );
    }

    #[test]
    fn who_a_rule_is_for() {
        let rules = [
            "allow user:alice all alice/#",
            "allow client:c7 publish c7/out",
            "allow everyone subscribe public/#",
            "allow anonymous publish anon/#",
        ];
        check(
            &rules,
            &[
                ("alice/c1", "pub", "alice/x", "allowed by alice/#"),
                ("bob/c1", "pub", "alice/x", "denied (no rule)"),
                ("bob/c7", "pub", "c7/out", "allowed by c7/out"),
                ("-/c7", "pub", "c7/out", "allowed by c7/out"),
                ("bob/c1", "sub", "public/+", "allowed by public/#"),
                ("-/c1", "sub", "public/#", "allowed by public/#"),
                ("-/c1", "pub", "anon/1", "allowed by anon/#"),
                ("alice/c1", "pub", "anon/1", "denied (no rule)"),
                ("alice/c1", "sub", "public/x", "allowed by public/#"),
            ],
        );
    }

    #[test]
    fn placeholders() {
        let rules = [
            "allow everyone all users/%u/#",
            "allow everyone publish clients/%c",
            "deny user:eve all users/%u/private",
        ];
        check(
            &rules,
            &[
                ("alice/c1", "pub", "users/alice/x", "allowed by users/%u/#"),
                ("alice/c1", "sub", "users/alice/#", "allowed by users/%u/#"),
                ("alice/c1", "pub", "users/bob/x", "denied (no rule)"),
                ("alice/c1", "sub", "users/+/x", "denied (no rule)"),
                ("alice/c1", "pub", "clients/c1", "allowed by clients/%c"),
                ("alice/c1", "pub", "clients/c2", "denied (no rule)"),
                ("eve/c3", "pub", "users/eve/private", "denied by users/%u/private"),
                ("eve/c3", "pub", "users/eve/public", "allowed by users/%u/#"),
                // An anonymous client has no user name: %u rules never apply to it.
                ("-/c1", "pub", "users/c1/x", "denied (no rule)"),
                ("-/c1", "pub", "clients/c1", "allowed by clients/%c"),
                // A name with a wildcard or a level separator cannot widen a rule.
                ("a+/c1", "pub", "users/a+/x", "denied (no rule)"),
                ("-/x/y", "pub", "clients/x/y", "denied (no rule)"),
                ("-/#", "pub", "clients/#", "denied (no rule)"),
            ],
        );
    }

    #[test]
    fn covering_filters() {
        let cases = [
            ("#", "a/b/#", true),
            ("#", "a", true),
            ("a/#", "a", true),
            ("a/#", "a/+/b", true),
            ("a/#", "b/#", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/+", "a/b/c", false),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("a/b", "a", false),
            ("+/+", "a/b", true),
            ("#", "$SYS/#", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a//b", "a/+/b", false),
            ("a/+/b", "a//b", true),
        ];
        for (rule, requested, expected) in cases {
            assert_eq!(covers(rule, requested), expected, "{rule} covers {requested}");
            // Covering agrees with matching when the request is a plain topic.
            if !requested.contains(['+', '#']) {
                assert_eq!(matches(requested, rule), expected, "{rule} matches {requested}");
            }
        }
    }

    #[test]
    fn rules_are_validated_and_keyed_by_what_they_say() {
        assert!(rule("allow everyone all a/#/b").validate().is_err());
        assert!(rule("allow everyone all a/b#").validate().is_err());
        assert!(rule("allow everyone all $share/g/a").validate().is_err());
        assert_eq!(rule("allow everyone all a/%u/#").validate(), Ok(()));
        assert_eq!(rule("allow everyone all a/x%u/#").validate(), Ok(()));
        assert!(TopicRule { subject: Subject::User(String::new()), ..rule("allow everyone all a") }
            .validate()
            .is_err());
        assert_eq!(rule("allow user:a all x").key(), rule("allow user:a all x").key());
        assert_ne!(rule("allow user:a all x").key(), rule("deny user:a all x").key());
        assert_ne!(rule("allow user:a all x").key(), rule("allow client:a all x").key());
        let encoded = serde_json::to_string(&rule("deny user:a subscribe x/+")).unwrap_or_default();
        assert_eq!(
            encoded,
            r#"{"subject":{"kind":"user","name":"a"},"permission":"deny","action":"subscribe","filter":"x/+"}"#
        );
        assert_eq!(serde_json::from_str::<TopicRule>(&encoded).ok(), Some(rule("deny user:a subscribe x/+")));
    }
}
