//! Topic names and topic filters (spec 4.7, 4.8.2): validation, matching a name against a
//! filter, and shared subscriptions `$share/{group}/{filter}`. Nothing here allocates: matching
//! walks both strings level by level, so the gateway can run it per message per subscription.
//!
//! A `$share/` filter is read as a shared subscription in both protocol versions: 3.1.1 has none,
//! but clients send them to brokers that accept them, and a share name with a wildcard is
//! refused either way.

/// The longest topic name or filter the wire can carry (a two-byte length, MQTT-4.7.3-3).
pub const TOPIC_BYTES_MAX: usize = 65_535;
/// The prefix of a shared subscription's topic filter (spec 4.8.2).
pub const SHARED_PREFIX: &str = "$share/";

/// Which rule of spec 4.7 or 4.8.2 a topic name or filter breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TopicError {
    #[error("empty; topic names and filters need at least one character (MQTT-4.7.3-1)")]
    Empty,
    #[error("{len} bytes, over the limit of {limit} (MQTT-4.7.3-3)")]
    TooLong { len: usize, limit: usize },
    #[error("contains U+0000 (MQTT-4.7.3-2)")]
    NullCharacter,
    #[error("a topic name must not contain the wildcards + or # (MQTT-3.3.2-2, MQTT-4.7.0-1)")]
    WildcardInName,
    #[error("# must be the last character and follow a / or stand alone (MQTT-4.7.1-1)")]
    MultiLevelWildcardMisplaced,
    #[error("+ must occupy a whole level (MQTT-4.7.1-2)")]
    SingleLevelWildcardMisplaced,
    #[error("a shared subscription needs a non-empty share name without / + # (MQTT-4.8.2-1, MQTT-4.8.2-2)")]
    InvalidShareName,
    #[error("a shared subscription needs a topic filter after its share name (MQTT-4.8.2-2)")]
    EmptySharedFilter,
}

fn check_common(text: &str, limit: usize) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > limit {
        return Err(TopicError::TooLong { len: text.len(), limit });
    }
    if text.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a topic name, as a PUBLISH carries it: non-empty, at most `limit` bytes (at most
/// [`TOPIC_BYTES_MAX`] on the wire), no U+0000, no wildcard.
pub fn validate_topic_name(name: &str, limit: usize) -> Result<(), TopicError> {
    check_common(name, limit)?;
    if name.bytes().any(|byte| byte == b'+' || byte == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter, as SUBSCRIBE and UNSUBSCRIBE carry it, including the share name of a
/// `$share/` filter.
pub fn validate_topic_filter(filter: &str, limit: usize) -> Result<(), TopicError> {
    check_common(filter, limit)?;
    match parse_shared(filter)? {
        Some(shared) => validate_plain_filter(shared.filter),
        None => validate_plain_filter(filter),
    }
}

fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::EmptySharedFilter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MultiLevelWildcardMisplaced);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelWildcardMisplaced);
        }
    }
    Ok(())
}

/// A shared subscription's parts (spec 4.8.2), borrowed from its filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedSubscription<'a> {
    pub group: &'a str,
    /// The filter messages are matched against.
    pub filter: &'a str,
}

/// Splits `$share/{group}/{filter}`: `Ok(None)` when `filter` is not a shared subscription,
/// an error when it starts with `$share/` but has no valid share name or no filter after it.
/// The filter part itself is not validated here ([`validate_topic_filter`] does both).
pub fn parse_shared(filter: &str) -> Result<Option<SharedSubscription<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARED_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(if rest.is_empty() || rest.contains(['+', '#']) {
            TopicError::InvalidShareName
        } else {
            TopicError::EmptySharedFilter
        });
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    if inner.is_empty() {
        return Err(TopicError::EmptySharedFilter);
    }
    Ok(Some(SharedSubscription { group, filter: inner }))
}

/// Whether the topic name `topic` matches the topic filter `filter` (spec 4.7). Both are
/// assumed valid; pass a shared subscription's inner filter, not the `$share/` one.
///
/// `#` matches its parent level too (`sport/#` matches `sport`), `+` matches exactly one
/// level, which may be empty, and a topic starting with `$` is never matched by a filter
/// starting with a wildcard (MQTT-4.7.2-1). Levels compare byte for byte, case-sensitively.
pub fn matches(topic: &str, filter: &str) -> bool {
    let topic = topic.as_bytes();
    let filter = filter.as_bytes();
    if topic.first() == Some(&b'$') && matches!(filter.first(), Some(b'+' | b'#')) {
        return false;
    }
    // One pass over both strings, byte by byte: `topic_idx` and `filter_idx` always stand at
    // the start of corresponding levels.
    let (mut topic_idx, mut filter_idx) = (0, 0);
    loop {
        let level_ends_at = |idx: usize| filter.get(idx).is_none_or(|&byte| byte == b'/');
        match filter.get(filter_idx) {
            // A valid filter has `#` only as its whole last level.
            Some(b'#') if filter_idx + 1 == filter.len() => return true,
            Some(b'+') if level_ends_at(filter_idx + 1) => {
                while topic.get(topic_idx).is_some_and(|&byte| byte != b'/') {
                    topic_idx += 1;
                }
                filter_idx += 1;
            }
            _ => {
                while let Some(&byte) = filter.get(filter_idx).filter(|&&byte| byte != b'/') {
                    if topic.get(topic_idx) != Some(&byte) {
                        return false;
                    }
                    topic_idx += 1;
                    filter_idx += 1;
                }
                if topic.get(topic_idx).is_some_and(|&byte| byte != b'/') {
                    return false;
                }
            }
        }
        // Both stand at a `/` or at their end.
        match (filter_idx < filter.len(), topic_idx < topic.len()) {
            (false, false) => return true,
            (true, true) => {
                filter_idx += 1;
                topic_idx += 1;
            }
            // `sport/#` matches `sport`: the parent level of a trailing `#` (spec 4.7.1.2).
            (true, false) => return &filter[filter_idx..] == b"/#",
            (false, true) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscriptions_split_into_group_and_filter() {
        assert_eq!(parse_shared("sport/#"), Ok(None));
        assert_eq!(
            parse_shared("$share/consumer1/sport/tennis/+"),
            Ok(Some(SharedSubscription { group: "consumer1", filter: "sport/tennis/+" }))
        );
        assert_eq!(parse_shared("$share//x"), Err(TopicError::InvalidShareName));
        assert_eq!(parse_shared("$share/g+/x"), Err(TopicError::InvalidShareName));
        assert_eq!(parse_shared("$share/group"), Err(TopicError::EmptySharedFilter));
        assert_eq!(parse_shared("$share/group/"), Err(TopicError::EmptySharedFilter));
        assert_eq!(validate_topic_filter("$share/g/a/#", TOPIC_BYTES_MAX), Ok(()));
        assert_eq!(
            validate_topic_filter("$share/g/a#", TOPIC_BYTES_MAX),
            Err(TopicError::MultiLevelWildcardMisplaced)
        );
    }
}
