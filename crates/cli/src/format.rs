//! The `--format` language of `tidewater consume`: kcat's placeholders, parsed once and then
//! applied to every record without allocating per placeholder.
//!
//! Placeholders: `%t` topic, `%p` partition, `%o` offset, `%T` timestamp in milliseconds (-1
//! when the record has none), `%k` key, `%K` key length, `%s` value, `%S` value length, `%h`
//! headers as `k=v,k=v` (a header without a value prints as `k`), `%%` a percent sign. Escapes:
//! `\n`, `\t`, `\r`, `\\`. A missing key or value prints as nothing and its length as -1. Keys,
//! values and header values are written as raw bytes, whatever their encoding. Anything else
//! after `%` or `\` is refused when the format is parsed, before any record is read.

use std::io::Write;

/// A parsed `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    KeyLength,
    Value,
    ValueLength,
    Headers,
}

/// The parts of one record a format can print.
#[derive(Debug)]
pub(crate) struct RecordView<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut tokens = Vec::new();
        let mut literal = Vec::new();
        let mut chars = text.chars();
        while let Some(character) = chars.next() {
            let placeholder = match character {
                '%' => match chars.next() {
                    Some('t') => Token::Topic,
                    Some('p') => Token::Partition,
                    Some('o') => Token::Offset,
                    Some('T') => Token::Timestamp,
                    Some('k') => Token::Key,
                    Some('K') => Token::KeyLength,
                    Some('s') => Token::Value,
                    Some('S') => Token::ValueLength,
                    Some('h') => Token::Headers,
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    Some(other) => return Err(format!("unknown placeholder %{other} in {text:?}")),
                    None => return Err(format!("{text:?} ends with a lone %; write %% for a percent sign")),
                },
                '\\' => {
                    let escaped = match chars.next() {
                        Some('n') => b'\n',
                        Some('t') => b'\t',
                        Some('r') => b'\r',
                        Some('\\') => b'\\',
                        Some(other) => return Err(format!("unknown escape \\{other} in {text:?}")),
                        None => {
                            return Err(format!("{text:?} ends with a lone \\; write \\\\ for a backslash"))
                        }
                    };
                    literal.push(escaped);
                    continue;
                }
                other => {
                    let mut buffer = [0u8; 4];
                    literal.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
                    continue;
                }
            };
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(placeholder);
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(Format { tokens })
    }
}

impl Format {
    /// Writes `record` as this format says.
    pub(crate) fn write(&self, record: &RecordView<'_>, out: &mut impl Write) -> std::io::Result<()> {
        fn length(bytes: Option<&[u8]>) -> i64 {
            bytes.map_or(-1, |bytes| bytes.len() as i64)
        }
        for token in &self.tokens {
            match token {
                Token::Literal(bytes) => out.write_all(bytes)?,
                Token::Topic => out.write_all(record.topic.as_bytes())?,
                Token::Partition => write!(out, "{}", record.partition)?,
                Token::Offset => write!(out, "{}", record.offset)?,
                Token::Timestamp => write!(out, "{}", record.timestamp_ms.unwrap_or(-1))?,
                Token::Key => out.write_all(record.key.unwrap_or_default())?,
                Token::KeyLength => write!(out, "{}", length(record.key))?,
                Token::Value => out.write_all(record.value.unwrap_or_default())?,
                Token::ValueLength => write!(out, "{}", length(record.value))?,
                Token::Headers => {
                    for (index, (name, value)) in record.headers.iter().enumerate() {
                        if index > 0 {
                            out.write_all(b",")?;
                        }
                        out.write_all(name.as_bytes())?;
                        if let Some(value) = value {
                            out.write_all(b"=")?;
                            out.write_all(value)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RecordView<'static> {
        RecordView {
            topic: "orders",
            partition: 2,
            offset: 41,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"k1"),
            value: Some(b"hello"),
            headers: vec![("source", Some(b"sensor-7".as_slice())), ("flag", None)],
        }
    }

    /// Parses `format`, applies it to `record` and compares with `expected` (or the parse error).
    fn check(format: &str, record: &RecordView<'_>, expected: Result<&str, &str>) {
        let actual = format.parse::<Format>().map(|format| {
            let mut out = Vec::new();
            format.write(record, &mut out).expect("write to a Vec");
            String::from_utf8(out).expect("utf-8")
        });
        assert_eq!(actual.as_deref(), expected.map_err(str::to_string).as_deref(), "format {format:?}");
    }

    #[test]
    fn placeholders_and_escapes() {
        let record = record();
        check("%s\\n", &record, Ok("hello\n"));
        check(
            "%t/%p@%o %T %k(%K)=%s(%S) [%h]",
            &record,
            Ok("orders/2@41 1700000000000 k1(2)=hello(5) [source=sensor-7,flag]"),
        );
        check("100%% \\t\\r\\\\ é", &record, Ok("100% \t\r\\ é"));
        check("", &record, Ok(""));
    }

    #[test]
    fn missing_parts_print_as_nothing_and_lengths_as_minus_one() {
        let record =
            RecordView { key: None, value: None, timestamp_ms: None, headers: Vec::new(), ..record() };
        check("[%k][%K][%s][%S][%T][%h]", &record, Ok("[][-1][][-1][-1][]"));
    }

    #[test]
    fn bad_formats_are_refused_with_the_reason() {
        let record = record();
        check("%x", &record, Err("unknown placeholder %x in \"%x\""));
        check("value %", &record, Err("\"value %\" ends with a lone %; write %% for a percent sign"));
        check("\\q", &record, Err("unknown escape \\q in \"\\\\q\""));
        check("a\\", &record, Err("\"a\\\\\" ends with a lone \\; write \\\\ for a backslash"));
    }
}
