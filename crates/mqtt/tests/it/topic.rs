//! Topic matching against the examples of spec 4.7 (and a few edges around them), one table
//! through one `check` helper; then name and filter validation the same way.

use tidewater_mqtt::topic::{
    matches, validate_topic_filter, validate_topic_name, TopicError, TOPIC_BYTES_MAX,
};

/// Asserts whether `topic` matches `filter`, and that the filter is a valid one.
#[track_caller]
fn check(filter: &str, topic: &str, expected: bool) {
    assert_eq!(validate_topic_filter(filter, TOPIC_BYTES_MAX), Ok(()), "filter {filter:?}");
    assert_eq!(validate_topic_name(topic, TOPIC_BYTES_MAX), Ok(()), "topic {topic:?}");
    assert_eq!(matches(topic, filter), expected, "{topic:?} against {filter:?}");
}

#[test]
fn matching_follows_the_examples_of_spec_4_7() {
    let table: &[(&str, &str, bool)] = &[
        // 4.7.1.2 multi-level wildcard.
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
        ("sport/#", "sport", true),
        ("sport/#", "sport/", true),
        ("#", "sport/tennis", true),
        ("#", "/", true),
        ("sport/tennis/#", "sport/tennis", true),
        ("sport/tennis/#", "sport/tennisplayer1", false),
        // 4.7.1.3 single-level wildcard.
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+", "sport", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("+/tennis/#", "sport/tennis/player1", true),
        ("sport/+/player1", "sport/tennis/player1", true),
        ("sport/+/player1", "sport/tennis/player2", false),
        // 4.7.2 topics beginning with $.
        ("#", "$SYS/monitor/Clients", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("+", "$SYS", false),
        ("$SYS/#", "$SYS", true),
        // 4.7.3 topic semantics: case-sensitive, spaces allowed, empty levels count.
        ("ACCOUNTS", "Accounts", false),
        ("Accounts payable", "Accounts payable", true),
        ("/finance", "finance", false),
        ("sport//tennis", "sport//tennis", true),
        ("sport/+/tennis", "sport//tennis", true),
        ("a/b", "a/b/c", false),
        ("a/b/c", "a/b", false),
        ("a/+/#", "a/b", true),
        ("a/+/#", "a", false),
        ("+/+/+", "a/b/c", true),
        ("+/+/+", "a/b", false),
    ];
    for &(filter, topic, expected) in table {
        check(filter, topic, expected);
    }
}

#[test]
fn topic_name_and_filter_validation() {
    let names: &[(&str, Result<(), TopicError>)] = &[
        ("sport/tennis", Ok(())),
        ("/", Ok(())),
        ("$SYS/x", Ok(())),
        ("", Err(TopicError::Empty)),
        ("a/+", Err(TopicError::WildcardInName)),
        ("#", Err(TopicError::WildcardInName)),
        ("a\0b", Err(TopicError::NullCharacter)),
    ];
    for (name, expected) in names {
        assert_eq!(validate_topic_name(name, TOPIC_BYTES_MAX), *expected, "name {name:?}");
    }
    let filters: &[(&str, Result<(), TopicError>)] = &[
        ("#", Ok(())),
        ("+", Ok(())),
        ("sport/tennis/#", Ok(())),
        ("+/tennis/#", Ok(())),
        ("sport/+/player1", Ok(())),
        ("$share/group/sport/#", Ok(())),
        ("$share/group/#", Ok(())),
        ("$sharex/a", Ok(())),
        ("", Err(TopicError::Empty)),
        ("sport/tennis#", Err(TopicError::MultiLevelWildcardMisplaced)),
        ("sport/tennis/#/ranking", Err(TopicError::MultiLevelWildcardMisplaced)),
        ("##", Err(TopicError::MultiLevelWildcardMisplaced)),
        ("sport+", Err(TopicError::SingleLevelWildcardMisplaced)),
        ("+sport", Err(TopicError::SingleLevelWildcardMisplaced)),
        ("$share/g#/a", Err(TopicError::InvalidShareName)),
        ("$share//a", Err(TopicError::InvalidShareName)),
        ("$share/g", Err(TopicError::EmptySharedFilter)),
        ("$share/g/", Err(TopicError::EmptySharedFilter)),
    ];
    for (filter, expected) in filters {
        assert_eq!(validate_topic_filter(filter, TOPIC_BYTES_MAX), *expected, "filter {filter:?}");
    }
}

#[test]
fn topic_length_limit_is_checked_at_its_boundary() {
    let longest = "a".repeat(TOPIC_BYTES_MAX);
    assert_eq!(validate_topic_name(&longest, TOPIC_BYTES_MAX), Ok(()));
    assert_eq!(
        validate_topic_name(&longest, 10),
        Err(TopicError::TooLong { len: TOPIC_BYTES_MAX, limit: 10 })
    );
    assert_eq!(validate_topic_filter("abcdefghij/#", 12), Ok(()));
    assert_eq!(validate_topic_filter("abcdefghij/#", 11), Err(TopicError::TooLong { len: 12, limit: 11 }));
}

#[test]
fn matching_does_not_allocate() {
    let topic = "building/7/floor/3/room/12/temperature";
    let filters = ["building/+/floor/+/room/+/temperature", "building/#", "#", "+/7/#", "building/8/#"];
    super::LARGEST_ALLOCATION_BYTES.with(|largest| largest.set(0));
    let n_matching = filters.iter().filter(|filter| matches(topic, filter)).count();
    let largest = super::LARGEST_ALLOCATION_BYTES.with(|largest| largest.get());
    assert_eq!(n_matching, 4);
    assert_eq!(largest, 0, "matching allocated");
}

/// The obvious implementation, level by level with `split`: the model the byte-by-byte
/// `matches` is checked against.
fn matches_model(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(filter_level), Some(topic_level)) if filter_level == topic_level => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Valid names and filters over a tiny alphabet, so that levels often coincide.
fn small_name() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    proptest::collection::vec("[ab$]{0,2}", 1..4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("empty", |name| !name.is_empty())
}

fn small_filter() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let level = prop_oneof![2 => "[ab$]{0,2}", 1 => Just("+".to_string())];
    (proptest::collection::vec(level, 0..4), any::<bool>()).prop_filter_map(
        "empty",
        |(levels, multi_level)| {
            let mut filter = levels.join("/");
            match (filter.is_empty() && levels.len() <= 1, multi_level) {
                (true, true) => filter.push('#'),
                (true, false) => return None,
                (false, true) => filter.push_str("/#"),
                (false, false) => {}
            }
            Some(filter)
        },
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 4096, ..Default::default() })]

    /// Every valid name and filter pair matches exactly when the model says so.
    #[test]
    fn matching_agrees_with_the_level_by_level_model(topic in small_name(), filter in small_filter()) {
        proptest::prop_assert_eq!(validate_topic_name(&topic, TOPIC_BYTES_MAX), Ok(()));
        proptest::prop_assert_eq!(validate_topic_filter(&filter, TOPIC_BYTES_MAX), Ok(()), "{}", filter);
        let expected = matches_model(&topic, &filter);
        proptest::prop_assert_eq!(matches(&topic, &filter), expected, "{} against {}", topic, filter);
    }
}
