//! `AclIndex`: an immutable set of ACL bindings, indexed so that deciding one action costs a
//! few hash lookups however many bindings there are, and the decision itself, exactly as
//! Kafka's `StandardAuthorizer` makes it (see the parent module for the rules).
//!
//! The bindings of each resource type are split by pattern type: literal bindings by name (the
//! wildcard `*` is one such name), prefixed bindings by prefix, with the distinct prefix
//! lengths kept sorted, so the prefixes that cover a name are found by slicing the name at
//! each length and looking the slice up. A change builds a new index (changes are rare,
//! decisions are on every request); readers hold an `Arc` to the one they started with.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use tidewater_security::KafkaPrincipal;

use super::model::{
    AclBinding, AclBindingFilter, AclEntry, Operation, PatternType, Permission, ResourcePattern,
    ResourceType, WILDCARD,
};

#[derive(Debug, Default)]
pub(crate) struct AclIndex {
    bindings: BTreeSet<AclBinding>,
    /// One per resource type, at `ResourceType::index`.
    sections: [Section; 4],
}

/// The bindings of one resource type.
#[derive(Debug, Default)]
struct Section {
    literal: HashMap<String, Vec<AclEntry>>,
    prefixed: HashMap<String, Vec<AclEntry>>,
    /// The distinct byte lengths of the keys of `prefixed`, ascending.
    prefix_lengths: Vec<usize>,
}

impl Section {
    /// Every entry whose pattern covers the resource `name`: its literal name, the wildcard,
    /// and each prefix of it that some prefixed binding names.
    fn covering<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a AclEntry> + 'a {
        let literal = self.literal.get(name).into_iter().flatten();
        let wildcard = (name != WILDCARD).then(|| self.literal.get(WILDCARD)).flatten().into_iter().flatten();
        let prefixed = self
            .prefix_lengths
            .iter()
            .take_while(move |length| **length <= name.len())
            .filter_map(move |length| name.get(..*length))
            .filter_map(|prefix| self.prefixed.get(prefix))
            .flatten();
        literal.chain(wildcard).chain(prefixed)
    }
}

impl AclIndex {
    pub(crate) fn new(bindings: BTreeSet<AclBinding>) -> AclIndex {
        let mut sections: [Section; 4] = Default::default();
        for binding in &bindings {
            let section = &mut sections[binding.pattern.resource_type.index()];
            let by_name = match binding.pattern.pattern_type {
                PatternType::Literal => &mut section.literal,
                PatternType::Prefixed => &mut section.prefixed,
            };
            by_name.entry(binding.pattern.name.clone()).or_default().push(binding.entry.clone());
        }
        for section in &mut sections {
            let lengths: BTreeSet<usize> = section.prefixed.keys().map(String::len).collect();
            section.prefix_lengths = lengths.into_iter().collect();
        }
        AclIndex { bindings, sections }
    }

    pub(crate) fn bindings(&self) -> &BTreeSet<AclBinding> {
        &self.bindings
    }

    /// Whether the bindings let `principal` at `peer` do `action` on the resource: some
    /// binding that applies allows it and none denies it.
    pub(crate) fn permits(
        &self,
        principal: &KafkaPrincipal,
        peer: IpAddr,
        action: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let mut allowed = false;
        for entry in self.sections[resource_type.index()].covering(name) {
            match entry.verdict(principal, peer, action) {
                Some(Permission::Deny) => return false,
                Some(Permission::Allow) => allowed = true,
                None => {}
            }
        }
        allowed
    }

    /// Whether the bindings let `principal` at `peer` do `action` on at least one resource of
    /// the type (Kafka's `Authorizer.authorizeByResourceType`, for an idempotent producer that
    /// may WRITE to some topic): an ALLOW for the action (or ALL), not cancelled by a DENY on
    /// the same literal name or on a prefix of it, or by a DENY on every name. Operations imply
    /// nothing here, as in Kafka. Patterns for which `grants_nothing` holds are passed over
    /// (the internal topics, which no binding opens).
    pub(crate) fn permits_some(
        &self,
        principal: &KafkaPrincipal,
        peer: IpAddr,
        action: Operation,
        resource_type: ResourceType,
        grants_nothing: impl Fn(&ResourcePattern) -> bool,
    ) -> bool {
        let mut denied_literal = HashSet::new();
        let mut denied_prefixes = HashSet::new();
        let mut allowed = Vec::new();
        let applicable = self.bindings.iter().filter(|binding| {
            let entry = &binding.entry;
            binding.pattern.resource_type == resource_type
                && (entry.operation == action || entry.operation == Operation::All)
                && entry.concerns(principal, peer)
        });
        for binding in applicable {
            let pattern = &binding.pattern;
            match (binding.entry.permission, pattern.pattern_type) {
                (Permission::Deny, PatternType::Literal) if pattern.name == WILDCARD => return false,
                (Permission::Deny, PatternType::Literal) => {
                    denied_literal.insert(pattern.name.as_str());
                }
                (Permission::Deny, PatternType::Prefixed) => {
                    denied_prefixes.insert(pattern.name.as_str());
                }
                (Permission::Allow, _) if grants_nothing(pattern) => {}
                (Permission::Allow, PatternType::Literal) if pattern.name == WILDCARD => return true,
                (Permission::Allow, _) => allowed.push(pattern),
            }
        }
        allowed.into_iter().any(|pattern| {
            let denied_by_literal = pattern.pattern_type == PatternType::Literal
                && denied_literal.contains(pattern.name.as_str());
            let denied_by_prefix = pattern
                .name
                .char_indices()
                .map(|(at, character)| &pattern.name[..at + character.len_utf8()])
                .any(|prefix| denied_prefixes.contains(prefix));
            !denied_by_literal && !denied_by_prefix
        })
    }

    /// The bindings a DescribeAcls or DeleteAcls filter selects, in order.
    pub(crate) fn matching<'a>(
        &'a self,
        filter: &'a AclBindingFilter,
    ) -> impl Iterator<Item = &'a AclBinding> {
        self.bindings.iter().filter(move |binding| filter.matches(binding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{binding as parse, from_fields};
    use proptest::prelude::*;

    fn index(bindings: &[&str]) -> AclIndex {
        AclIndex::new(bindings.iter().map(|text| parse(text)).collect())
    }

    const ALICE_HOST: &str = "10.0.0.1";

    #[test]
    fn decisions_follow_kafkas_standard_authorizer() {
        let check = |bindings: &[&str],
                     who: &str,
                     action: Operation,
                     resource: (ResourceType, &str),
                     expected: bool| {
            let principal: KafkaPrincipal = who.parse().expect("principal");
            let peer: IpAddr = ALICE_HOST.parse().expect("ip");
            let (resource_type, name) = resource;
            let bindings: Vec<AclBinding> = bindings.iter().map(|text| parse(text)).collect();
            let index = AclIndex::new(bindings.iter().cloned().collect());
            let decided = index.permits(&principal, peer, action, resource_type, name);
            assert_eq!(decided, expected, "{who} {action} {resource_type}:{name} under {bindings:?}");
            let scanned = decide_by_scanning(&bindings, &principal, peer, action, resource_type, name);
            assert_eq!(scanned, expected, "by scanning");
        };
        use Operation::*;
        use ResourceType::*;
        let orders = (Topic, "orders");
        // Nothing applies: denied.
        check(&[], "User:alice", Read, orders, false);
        check(&["TOPIC:LITERAL:orders User:bob@* READ ALLOW"], "User:alice", Read, orders, false);
        check(&["TOPIC:LITERAL:orders User:alice@* READ ALLOW"], "User:alice", Read, orders, true);
        check(&["TOPIC:LITERAL:orders User:alice@* READ ALLOW"], "User:alice", Write, orders, false);
        check(&["GROUP:LITERAL:orders User:alice@* READ ALLOW"], "User:alice", Read, orders, false);
        // Literal names are whole names; prefixed ones cover every name they start.
        check(&["TOPIC:LITERAL:ord User:alice@* READ ALLOW"], "User:alice", Read, orders, false);
        check(&["TOPIC:LITERAL:orders-eu User:alice@* READ ALLOW"], "User:alice", Read, orders, false);
        check(&["TOPIC:PREFIXED:ord User:alice@* READ ALLOW"], "User:alice", Read, orders, true);
        check(&["TOPIC:PREFIXED:orders User:alice@* READ ALLOW"], "User:alice", Read, orders, true);
        check(&["TOPIC:PREFIXED:orders- User:alice@* READ ALLOW"], "User:alice", Read, orders, false);
        check(&["TOPIC:PREFIXED:* User:alice@* READ ALLOW"], "User:alice", Read, orders, false);
        // The wildcard name, principal and host.
        check(&["TOPIC:LITERAL:* User:alice@* READ ALLOW"], "User:alice", Read, orders, true);
        check(&["TOPIC:LITERAL:orders User:*@* READ ALLOW"], "User:alice", Read, orders, true);
        check(&["TOPIC:LITERAL:orders Group:*@* READ ALLOW"], "User:alice", Read, orders, false);
        check(&["TOPIC:LITERAL:orders User:alice@10.0.0.1 READ ALLOW"], "User:alice", Read, orders, true);
        check(&["TOPIC:LITERAL:orders User:alice@10.0.0.2 READ ALLOW"], "User:alice", Read, orders, false);
        check(
            &["TOPIC:LITERAL:orders User:alice@::ffff:10.0.0.1 READ ALLOW"],
            "User:alice",
            Read,
            orders,
            true,
        );
        // Deny wins, from any pattern, for any principal that applies.
        let allow = "TOPIC:LITERAL:orders User:alice@* READ ALLOW";
        check(&[allow, "TOPIC:LITERAL:orders User:alice@* READ DENY"], "User:alice", Read, orders, false);
        check(&[allow, "TOPIC:PREFIXED:o User:*@* READ DENY"], "User:alice", Read, orders, false);
        check(&[allow, "TOPIC:LITERAL:* User:alice@10.0.0.1 ALL DENY"], "User:alice", Read, orders, false);
        check(&[allow, "TOPIC:LITERAL:* User:alice@10.0.0.2 ALL DENY"], "User:alice", Read, orders, true);
        check(&[allow, "TOPIC:LITERAL:orders User:alice@* WRITE DENY"], "User:alice", Read, orders, true);
        check(&[allow, "TOPIC:PREFIXED:orders- User:*@* READ DENY"], "User:alice", Read, orders, true);
        // Implied operations: allowed through READ, WRITE, DELETE, ALTER; never denied through them.
        for implying in ["READ", "WRITE", "DELETE", "ALTER", "ALL"] {
            let binding = format!("TOPIC:LITERAL:orders User:alice@* {implying} ALLOW");
            check(&[&binding], "User:alice", Describe, orders, true);
        }
        check(&["TOPIC:LITERAL:orders User:alice@* CREATE ALLOW"], "User:alice", Describe, orders, false);
        check(
            &["TOPIC:LITERAL:orders User:alice@* ALTER_CONFIGS ALLOW"],
            "User:alice",
            DescribeConfigs,
            orders,
            true,
        );
        check(
            &["TOPIC:LITERAL:orders User:alice@* ALTER_CONFIGS ALLOW"],
            "User:alice",
            Describe,
            orders,
            false,
        );
        check(
            &[
                "TOPIC:LITERAL:orders User:alice@* DESCRIBE ALLOW",
                "TOPIC:LITERAL:orders User:alice@* READ DENY",
            ],
            "User:alice",
            Describe,
            orders,
            true,
        );
        check(
            &[
                "TOPIC:LITERAL:orders User:alice@* READ ALLOW",
                "TOPIC:LITERAL:orders User:alice@* DESCRIBE DENY",
            ],
            "User:alice",
            Describe,
            orders,
            false,
        );
        check(
            &["CLUSTER:LITERAL:kafka-cluster User:alice@* ALL ALLOW"],
            "User:alice",
            Create,
            (Cluster, "kafka-cluster"),
            true,
        );
        // Names are compared as text: a prefix must end on a character boundary to be one.
        check(&["GROUP:PREFIXED:é User:alice@* READ ALLOW"], "User:alice", Read, (Group, "été"), true);
        check(&["GROUP:PREFIXED:e User:alice@* READ ALLOW"], "User:alice", Read, (Group, "été"), false);
    }

    #[test]
    fn some_resource_of_a_type_is_permitted_as_kafkas_authorize_by_resource_type() {
        let check = |bindings: &[&str], expected: bool| {
            let principal: KafkaPrincipal = "User:alice".parse().expect("principal");
            let peer: IpAddr = ALICE_HOST.parse().expect("ip");
            let internal = |pattern: &ResourcePattern| pattern.name.starts_with("_tidewater_");
            let decided = index(bindings).permits_some(
                &principal,
                peer,
                Operation::Write,
                ResourceType::Topic,
                internal,
            );
            assert_eq!(decided, expected, "{bindings:?}");
        };
        check(&[], false);
        check(&["TOPIC:LITERAL:orders User:alice@* WRITE ALLOW"], true);
        check(&["TOPIC:PREFIXED:ord User:*@* ALL ALLOW"], true);
        check(&["TOPIC:LITERAL:orders User:alice@* READ ALLOW"], false);
        check(&["TOPIC:LITERAL:orders User:bob@* WRITE ALLOW"], false);
        check(&["TOPIC:LITERAL:orders User:alice@10.9.9.9 WRITE ALLOW"], false);
        check(&["GROUP:LITERAL:orders User:alice@* WRITE ALLOW"], false);
        check(
            &[
                "TOPIC:LITERAL:orders User:alice@* WRITE ALLOW",
                "TOPIC:LITERAL:orders User:alice@* WRITE DENY",
            ],
            false,
        );
        check(
            &["TOPIC:LITERAL:orders User:alice@* WRITE ALLOW", "TOPIC:PREFIXED:or User:*@* ALL DENY"],
            false,
        );
        check(
            &[
                "TOPIC:PREFIXED:orders User:alice@* WRITE ALLOW",
                "TOPIC:LITERAL:orders User:alice@* WRITE DENY",
            ],
            true,
        );
        check(
            &["TOPIC:LITERAL:orders User:alice@* WRITE ALLOW", "TOPIC:LITERAL:* User:alice@* WRITE DENY"],
            false,
        );
        check(
            &["TOPIC:LITERAL:* User:alice@* WRITE ALLOW", "TOPIC:LITERAL:orders User:alice@* WRITE DENY"],
            true,
        );
        check(
            &[
                "TOPIC:LITERAL:orders User:alice@* WRITE ALLOW",
                "TOPIC:LITERAL:logs User:alice@* WRITE ALLOW",
                "TOPIC:LITERAL:logs User:alice@* WRITE DENY",
            ],
            true,
        );
        // The internal topics are opened by no binding, so they count for nothing.
        check(&["TOPIC:LITERAL:_tidewater_devices User:alice@* WRITE ALLOW"], false);
        check(&["TOPIC:PREFIXED:_tidewater_ User:alice@* WRITE ALLOW"], false);
    }

    /// The decision without the index: every binding of the type that covers the name.
    fn decide_by_scanning(
        bindings: &[AclBinding],
        principal: &KafkaPrincipal,
        peer: IpAddr,
        action: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let verdicts: Vec<Permission> = bindings
            .iter()
            .filter(|binding| binding.pattern.resource_type == resource_type && binding.pattern.covers(name))
            .filter_map(|binding| binding.entry.verdict(principal, peer, action))
            .collect();
        verdicts.contains(&Permission::Allow) && !verdicts.contains(&Permission::Deny)
    }

    /// Small alphabets, so that random bindings and resources meet often.
    fn arbitrary_binding() -> impl Strategy<Value = AclBinding> {
        let names = prop::sample::select(vec!["a", "ab", "abc", "b", "*", "é", "éa"]);
        let principals = prop::sample::select(vec!["User:a", "User:b", "User:*"]);
        let hosts = prop::sample::select(vec!["*", "10.0.0.1", "10.0.0.2"]);
        (2i8..=5, names, 3i8..=4, principals, hosts, 2i8..=12, 2i8..=3).prop_map(
            |(resource_type, name, pattern_type, principal, host, operation, permission)| {
                let name = if resource_type == 4 { "kafka-cluster" } else { name };
                from_fields((resource_type, name, pattern_type, principal, host, operation, permission))
                    .expect("generated bindings are valid")
            },
        )
    }

    proptest! {
        #[test]
        fn the_index_decides_as_a_scan_of_every_binding(
            bindings in prop::collection::vec(arbitrary_binding(), 0..24),
            principal in prop::sample::select(vec!["User:a", "User:b", "User:c"]),
            peer in prop::sample::select(vec!["10.0.0.1", "10.0.0.2"]),
            operation in 3i8..=12,
            resource_type in 2i8..=5,
            name in prop::sample::select(vec!["a", "ab", "abc", "abd", "b", "*", "é", "éa", "kafka-cluster"]),
        ) {
            let principal: KafkaPrincipal = principal.parse().expect("principal");
            let peer: IpAddr = peer.parse().expect("ip");
            let action = <Operation as super::super::model::Coded>::from_code(operation).expect("operation");
            let resource_type =
                <ResourceType as super::super::model::Coded>::from_code(resource_type).expect("type");
            let index = AclIndex::new(bindings.iter().cloned().collect());
            prop_assert_eq!(
                index.permits(&principal, peer, action, resource_type, name),
                decide_by_scanning(&bindings, &principal, peer, action, resource_type, name)
            );
        }
    }
}
