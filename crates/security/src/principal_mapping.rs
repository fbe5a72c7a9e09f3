//! Kafka's `ssl.principal.mapping.rules`: how a client certificate's distinguished name becomes
//! a principal's name. A list of rules, separated by commas, tried in order:
//!
//! - `DEFAULT`: the whole DN, unchanged (the only rule when none is given);
//! - `RULE:pattern/replacement/` with an optional `L` or `U` after it: if the regular expression
//!   matches the whole DN, the name is the replacement with `$1`, `$2`... filled from its groups,
//!   lower- or upper-cased as asked. `\/` and `\\` escape a slash or a backslash.
//!
//! `RULE:^CN=([^,]*).*$/$1/,DEFAULT` takes the CN alone and keeps the whole DN for certificates
//! without one. A DN that no rule matches is refused, as Kafka refuses it.

use std::fmt;

use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ssl.principal.mapping.rules at {at:?}: {reason}")]
pub struct MappingError {
    pub at: String,
    pub reason: String,
}

#[derive(Clone)]
enum Rule {
    Default,
    Pattern { regex: Regex, replacement: String, case: Case },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// Parsed mapping rules.
#[derive(Clone)]
pub struct PrincipalMapping {
    rules: Vec<Rule>,
    text: String,
}

impl fmt::Debug for PrincipalMapping {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "PrincipalMapping({})", self.text)
    }
}

impl Default for PrincipalMapping {
    fn default() -> Self {
        PrincipalMapping { rules: vec![Rule::Default], text: "DEFAULT".to_string() }
    }
}

impl PrincipalMapping {
    pub fn parse(text: &str) -> Result<PrincipalMapping, MappingError> {
        let mut rules = Vec::new();
        let mut rest = text.trim_start();
        while !rest.is_empty() {
            let error = |reason: &str| MappingError { at: rest.to_string(), reason: reason.to_string() };
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) =
                    take_until_slash(after).ok_or_else(|| error("a rule needs pattern/replacement/"))?;
                let (replacement, after) =
                    take_until_slash(after).ok_or_else(|| error("a rule needs pattern/replacement/"))?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Case::Lower, &after[1..]),
                    Some('U') => (Case::Upper, &after[1..]),
                    _ => (Case::Keep, after),
                };
                // The pattern must match the whole DN, as Java's `Matcher.matches`.
                let regex = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|regex_error| error(&format!("bad pattern {pattern:?}: {regex_error}")))?;
                rules.push(Rule::Pattern { regex, replacement, case });
                rest = after;
            } else {
                return Err(error("expected DEFAULT or RULE:pattern/replacement/"));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => {
                    return Err(MappingError { at: rest.to_string(), reason: "expected a comma".to_string() })
                }
            }
        }
        if rules.is_empty() {
            return Ok(PrincipalMapping::default());
        }
        Ok(PrincipalMapping { rules, text: text.trim().to_string() })
    }

    /// The principal name for `distinguished_name`: the first rule that applies.
    pub fn apply(&self, distinguished_name: &str) -> Result<String, String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(distinguished_name.to_string()),
                Rule::Pattern { regex, replacement, case } => {
                    let Some(captures) = regex.captures(distinguished_name) else { continue };
                    let name = expand(replacement, &captures);
                    return Ok(match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        Err(format!(
            "no ssl.principal.mapping.rules rule applies to {distinguished_name:?} (rules: {})",
            self.text
        ))
    }
}

/// Reads up to the next unescaped `/`, undoing `\/` and `\\` escapes; returns what it read and
/// the text after the slash.
fn take_until_slash(text: &str) -> Option<(String, &str)> {
    let mut read = String::new();
    let mut characters = text.char_indices();
    while let Some((index, character)) = characters.next() {
        match character {
            '/' => return Some((read, &text[index + 1..])),
            '\\' => match characters.next() {
                Some((_, '/')) => read.push('/'),
                // Any other escape belongs to the regular expression (`\d`, `\\`): keep it.
                Some((_, other)) => {
                    read.push('\\');
                    read.push(other);
                }
                None => read.push('\\'),
            },
            other => read.push(other),
        }
    }
    None
}

/// Fills `$n` in `replacement` from `captures` as Java's `replaceAll` does: the longest run of
/// digits that names an existing group, the rest literal; `\$` is a literal dollar sign.
fn expand(replacement: &str, captures: &regex::Captures<'_>) -> String {
    let groups = captures.len() - 1;
    let mut expanded = String::with_capacity(replacement.len());
    let bytes = replacement.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' if index + 1 < bytes.len() => {
                let next = replacement[index + 1..].chars().next().unwrap_or('\\');
                expanded.push(next);
                index += 1 + next.len_utf8();
            }
            b'$' => {
                let digits = bytes[index + 1..].iter().take_while(|byte| byte.is_ascii_digit()).count();
                // The longest prefix of the digits that is a valid group number.
                let group = (1..=digits).rev().find_map(|take| {
                    let number: usize = replacement[index + 1..index + 1 + take].parse().ok()?;
                    (number <= groups).then_some((number, take))
                });
                match group {
                    Some((number, take)) => {
                        expanded.push_str(captures.get(number).map(|group| group.as_str()).unwrap_or(""));
                        index += 1 + take;
                    }
                    None => {
                        expanded.push('$');
                        index += 1;
                    }
                }
            }
            _ => {
                let character = replacement[index..].chars().next().unwrap_or_default();
                expanded.push(character);
                index += character.len_utf8();
            }
        }
    }
    expanded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rules: &str, dn: &str, expected: Result<&str, &str>) {
        let mapping = PrincipalMapping::parse(rules).unwrap_or_else(|error| panic!("{rules}: {error}"));
        match (mapping.apply(dn), expected) {
            (Ok(name), Ok(expected)) => assert_eq!(name, expected, "{rules} on {dn}"),
            (Err(error), Err(expected)) => assert!(error.contains(expected), "{rules} on {dn}: {error}"),
            (outcome, expected) => panic!("{rules} on {dn}: {outcome:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn rules_map_distinguished_names_as_kafka_does() {
        let dn = "CN=Alice,OU=Eng,O=Acme,C=US";
        check("", dn, Ok(dn));
        check("DEFAULT", dn, Ok(dn));
        check("RULE:^CN=(.*?),OU=(.*?),.*$/$1@$2/", dn, Ok("Alice@Eng"));
        check("RULE:^CN=(.*?),OU=(.*?),.*$/$1@$2/L", dn, Ok("alice@eng"));
        check("RULE:^CN=(.*?),OU=(.*?),.*$/$1@$2/U", dn, Ok("ALICE@ENG"));
        check("RULE:^CN=([^,]*).*$/$1/", dn, Ok("Alice"));
        // The first rule that matches wins; DEFAULT catches the rest.
        check("RULE:^CN=(.*),OU=Ops.*$/ops-$1/, RULE:^CN=([^,]*).*$/$1/,DEFAULT", dn, Ok("Alice"));
        check("RULE:^O=(.*)$/$1/,DEFAULT", dn, Ok(dn));
        // A pattern must match the whole name.
        check("RULE:CN=Alice/x/", dn, Err("no ssl.principal.mapping.rules rule applies"));
        // Slashes escaped in the pattern and replacement; invalid group numbers stay literal.
        check("RULE:^CN=(a\\/b)$/x\\/$1$2/", "CN=a/b", Ok("x/a/b$2"));
        check("RULE:^CN=(.*)$/$12/", "CN=z", Ok("z2"));
    }

    #[test]
    fn malformed_rules_are_refused_with_where_they_went_wrong() {
        for rules in ["RULE:abc", "RULE:abc/def", "NOPE", "DEFAULT DEFAULT", "RULE:(/x/"] {
            let error = PrincipalMapping::parse(rules).expect_err(rules);
            assert!(error.to_string().contains("ssl.principal.mapping.rules"), "{error}");
        }
    }
}
