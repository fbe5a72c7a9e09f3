//! Trigger filters: a small condition language over an event's key, headers and JSON value.
//!
//! A trigger fires only for events its filter accepts. The language is deliberately small (the
//! streaming SQL engine's expression language is meant to replace it) and is parsed once, when a
//! trigger starts, into a tree that is evaluated per event:
//!
//! ```text
//! value.temperature > 70 AND headers.type = 'reading'
//! exists(value.alarm) || key == "sensor-7"
//! NOT starts_with(headers['ce_type'], 'test.') AND value.readings[0].ok = true
//! ```
//!
//! - Paths: `key`, `topic`, `partition`, `offset`, `timestamp` (milliseconds), `value` (the whole
//!   value: JSON if it parses, else its text), `value.a.b`, `value['a b']`, `value.list[2]`,
//!   `headers.name` or `headers['name']` (text). A path that leads nowhere is `null`.
//! - Literals: numbers, `'text'` or `"text"`, `true`, `false`, `null`.
//! - Comparisons: `=` or `==`, `!=` or `<>`, `<`, `<=`, `>`, `>=`. Numbers compare as numbers
//!   (a header's text is read as a number when compared with one), text compares as text, and
//!   values of different types are never equal and never ordered.
//! - Logic: `AND`/`&&`, `OR`/`||`, `NOT`/`!`, parentheses. Keywords are case-insensitive.
//! - Functions: `exists(path)`, `contains(text, part)`, `starts_with(text, prefix)`,
//!   `ends_with(text, suffix)`, `lower(text)`, `upper(text)`.
//!
//! The value is parsed as JSON at most once per event, and only if the filter reads it.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value as Json;

use crate::event::Event;

/// Longest filter text accepted, in bytes: filters are written by people, and the limit keeps a
/// pathological one (deep nesting) from exhausting the parser's stack.
pub const FILTER_BYTES_MAX: usize = 4096;
/// Deepest nesting of parentheses and `NOT`s.
const NESTING_MAX: usize = 64;

/// A parsed filter, ready to evaluate against events.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Expr,
    source: String,
    reads_value: bool,
}

/// Why a filter did not parse: a message and the byte offset it refers to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter error at column {}: {message}", .offset + 1)]
pub struct FilterError {
    pub offset: usize,
    pub message: String,
}

impl Filter {
    /// Parses `source`, or says where and why it is not a filter.
    pub fn parse(source: &str) -> Result<Filter, FilterError> {
        if source.len() > FILTER_BYTES_MAX {
            return Err(FilterError {
                offset: FILTER_BYTES_MAX,
                message: format!(
                    "a filter is at most {FILTER_BYTES_MAX} bytes, this one is {}",
                    source.len()
                ),
            });
        }
        let tokens = tokenize(source)?;
        let mut parser = Parser { tokens, position: 0, depth: 0, end: source.len() };
        let root = parser.or()?;
        if let Some(token) = parser.tokens.get(parser.position) {
            return Err(FilterError {
                offset: token.offset,
                message: format!("unexpected {} after a complete condition", token.kind),
            });
        }
        let reads_value = root.reads_value();
        Ok(Filter { root, source: source.to_string(), reads_value })
    }

    /// The text the filter was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        let parsed_value = if self.reads_value {
            event.value.as_deref().and_then(|bytes| serde_json::from_slice::<Json>(bytes).ok())
        } else {
            None
        };
        let context = Context { event, value: parsed_value.as_ref() };
        truthy(&self.root.evaluate(&context))
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.source)
    }
}

// ---- evaluation ----

struct Context<'a> {
    event: &'a Event,
    /// The value parsed as JSON, when it is JSON and the filter reads it.
    value: Option<&'a Json>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Json),
    Path(Path),
    Compare(Box<Expr>, CompareOp, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Call(Function, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompareOp {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Exists,
    Contains,
    StartsWith,
    EndsWith,
    Lower,
    Upper,
}

impl Function {
    fn from_name(name: &str) -> Option<(Function, usize)> {
        Some(match name.to_ascii_lowercase().as_str() {
            "exists" => (Function::Exists, 1),
            "contains" => (Function::Contains, 2),
            "starts_with" => (Function::StartsWith, 2),
            "ends_with" => (Function::EndsWith, 2),
            "lower" => (Function::Lower, 1),
            "upper" => (Function::Upper, 1),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Path {
    Key,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Header(String),
    Value(Vec<Step>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
}

impl Expr {
    fn reads_value(&self) -> bool {
        match self {
            Expr::Literal(_) => false,
            Expr::Path(path) => matches!(path, Path::Value(_)),
            Expr::Compare(left, _, right) | Expr::And(left, right) | Expr::Or(left, right) => {
                left.reads_value() || right.reads_value()
            }
            Expr::Not(inner) => inner.reads_value(),
            Expr::Call(_, arguments) => arguments.iter().any(Expr::reads_value),
        }
    }

    fn evaluate(&self, context: &Context<'_>) -> Json {
        match self {
            Expr::Literal(value) => value.clone(),
            Expr::Path(path) => path.resolve(context),
            Expr::Compare(left, op, right) => {
                Json::Bool(compare(&left.evaluate(context), *op, &right.evaluate(context)))
            }
            // AND and OR short-circuit: the right side may read a value the left ruled out.
            Expr::And(left, right) => {
                Json::Bool(truthy(&left.evaluate(context)) && truthy(&right.evaluate(context)))
            }
            Expr::Or(left, right) => {
                Json::Bool(truthy(&left.evaluate(context)) || truthy(&right.evaluate(context)))
            }
            Expr::Not(inner) => Json::Bool(!truthy(&inner.evaluate(context))),
            Expr::Call(function, arguments) => {
                let values: Vec<Json> = arguments.iter().map(|argument| argument.evaluate(context)).collect();
                call(*function, &values)
            }
        }
    }
}

impl Path {
    fn resolve(&self, context: &Context<'_>) -> Json {
        let event = context.event;
        match self {
            Path::Key => event.key_str().map_or(Json::Null, |key| Json::String(key.to_string())),
            Path::Topic => Json::String(event.topic.to_string()),
            Path::Partition => Json::from(event.partition),
            Path::Offset => Json::from(event.offset),
            Path::Timestamp => event.timestamp_ms.map_or(Json::Null, Json::from),
            Path::Header(name) => event
                .header(name)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .map_or(Json::Null, |text| Json::String(text.to_string())),
            Path::Value(steps) => {
                let Some(mut current) = context.value else {
                    // Not JSON: the whole value is available as text, nothing inside it is.
                    if !steps.is_empty() {
                        return Json::Null;
                    }
                    return event
                        .value
                        .as_deref()
                        .and_then(|bytes| std::str::from_utf8(bytes).ok())
                        .map_or(Json::Null, |text| Json::String(text.to_string()));
                };
                for step in steps {
                    let next = match step {
                        Step::Field(name) => current.get(name.as_str()),
                        Step::Index(index) => current.get(*index),
                    };
                    match next {
                        Some(value) => current = value,
                        None => return Json::Null,
                    }
                }
                current.clone()
            }
        }
    }
}

fn truthy(value: &Json) -> bool {
    matches!(value, Json::Bool(true))
}

/// A number as `f64`, also when it is text that reads as one (headers are always text).
fn as_number(value: &Json) -> Option<f64> {
    match value {
        Json::Number(number) => number.as_f64(),
        Json::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
}

fn order(left: &Json, right: &Json) -> Option<Ordering> {
    match (left, right) {
        (Json::String(left), Json::String(right)) => Some(left.cmp(right)),
        (Json::Bool(left), Json::Bool(right)) => Some(left.cmp(right)),
        (Json::Null, Json::Null) => Some(Ordering::Equal),
        (Json::Number(_), _) | (_, Json::Number(_)) => as_number(left)?.partial_cmp(&as_number(right)?),
        (Json::Array(_), Json::Array(_)) | (Json::Object(_), Json::Object(_)) => {
            (left == right).then_some(Ordering::Equal)
        }
        _ => None,
    }
}

fn compare(left: &Json, op: CompareOp, right: &Json) -> bool {
    let ordering = order(left, right);
    match op {
        CompareOp::Equal => ordering == Some(Ordering::Equal),
        CompareOp::NotEqual => ordering != Some(Ordering::Equal),
        CompareOp::Less => ordering == Some(Ordering::Less),
        CompareOp::LessOrEqual => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        CompareOp::Greater => ordering == Some(Ordering::Greater),
        CompareOp::GreaterOrEqual => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
    }
}

fn call(function: Function, arguments: &[Json]) -> Json {
    let text = |index: usize| arguments.get(index).and_then(Json::as_str);
    match function {
        Function::Exists => Json::Bool(!matches!(arguments.first(), Some(Json::Null) | None)),
        Function::Contains => match (arguments.first(), text(1)) {
            (Some(Json::String(haystack)), Some(needle)) => Json::Bool(haystack.contains(needle)),
            (Some(Json::Array(items)), _) => {
                Json::Bool(arguments.get(1).is_some_and(|needle| items.contains(needle)))
            }
            _ => Json::Bool(false),
        },
        Function::StartsWith => {
            Json::Bool(matches!((text(0), text(1)), (Some(whole), Some(part)) if whole.starts_with(part)))
        }
        Function::EndsWith => {
            Json::Bool(matches!((text(0), text(1)), (Some(whole), Some(part)) if whole.ends_with(part)))
        }
        Function::Lower => text(0).map_or(Json::Null, |value| Json::String(value.to_lowercase())),
        Function::Upper => text(0).map_or(Json::Null, |value| Json::String(value.to_uppercase())),
    }
}

// ---- lexing ----

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Identifier(String),
    Text(String),
    Number(f64),
    Compare(CompareOp),
    And,
    Or,
    Not,
    Dot,
    Comma,
    OpenParen,
    CloseParen,
    OpenBracket,
    CloseBracket,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Identifier(name) => write!(formatter, "name {name:?}"),
            TokenKind::Text(text) => write!(formatter, "text {text:?}"),
            TokenKind::Number(number) => write!(formatter, "number {number}"),
            TokenKind::Compare(_) => formatter.write_str("a comparison"),
            TokenKind::And => formatter.write_str("AND"),
            TokenKind::Or => formatter.write_str("OR"),
            TokenKind::Not => formatter.write_str("NOT"),
            TokenKind::Dot => formatter.write_str("'.'"),
            TokenKind::Comma => formatter.write_str("','"),
            TokenKind::OpenParen => formatter.write_str("'('"),
            TokenKind::CloseParen => formatter.write_str("')'"),
            TokenKind::OpenBracket => formatter.write_str("'['"),
            TokenKind::CloseBracket => formatter.write_str("']'"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: TokenKind,
    offset: usize,
}

fn tokenize(source: &str) -> Result<Vec<Token>, FilterError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let start = position;
        let byte = bytes[position];
        let two = source.get(position..position + 2).unwrap_or("");
        let (kind, length) = match byte {
            b' ' | b'\t' | b'\r' | b'\n' => {
                position += 1;
                continue;
            }
            b'.' if !bytes.get(position + 1).is_some_and(u8::is_ascii_digit) => (TokenKind::Dot, 1),
            b',' => (TokenKind::Comma, 1),
            b'(' => (TokenKind::OpenParen, 1),
            b')' => (TokenKind::CloseParen, 1),
            b'[' => (TokenKind::OpenBracket, 1),
            b']' => (TokenKind::CloseBracket, 1),
            _ if two == "&&" => (TokenKind::And, 2),
            _ if two == "||" => (TokenKind::Or, 2),
            _ if two == "==" => (TokenKind::Compare(CompareOp::Equal), 2),
            _ if two == "!=" || two == "<>" => (TokenKind::Compare(CompareOp::NotEqual), 2),
            _ if two == "<=" => (TokenKind::Compare(CompareOp::LessOrEqual), 2),
            _ if two == ">=" => (TokenKind::Compare(CompareOp::GreaterOrEqual), 2),
            b'=' => (TokenKind::Compare(CompareOp::Equal), 1),
            b'<' => (TokenKind::Compare(CompareOp::Less), 1),
            b'>' => (TokenKind::Compare(CompareOp::Greater), 1),
            b'!' => (TokenKind::Not, 1),
            b'\'' | b'"' => {
                let (text, length) = lex_text(source, position)?;
                (TokenKind::Text(text), length)
            }
            b'0'..=b'9' | b'-' | b'.' => {
                let end = source[position + 1..]
                    .find(|character: char| {
                        !(character.is_ascii_digit() || matches!(character, '.' | 'e' | 'E' | '+' | '-'))
                    })
                    .map_or(source.len(), |length| position + 1 + length);
                let number = source[position..end].parse::<f64>().map_err(|_| FilterError {
                    offset: position,
                    message: format!("{:?} is not a number", &source[position..end]),
                })?;
                (TokenKind::Number(number), end - position)
            }
            _ if byte == b'_' || byte.is_ascii_alphabetic() => {
                let end = source[position..]
                    .find(|character: char| !(character == '_' || character.is_ascii_alphanumeric()))
                    .map_or(source.len(), |length| position + length);
                let word = &source[position..end];
                let kind = match word.to_ascii_lowercase().as_str() {
                    "and" => TokenKind::And,
                    "or" => TokenKind::Or,
                    "not" => TokenKind::Not,
                    _ => TokenKind::Identifier(word.to_string()),
                };
                (kind, end - position)
            }
            _ => {
                let character = source[position..].chars().next().unwrap_or('?');
                return Err(FilterError {
                    offset: position,
                    message: format!("unexpected character {character:?}"),
                });
            }
        };
        tokens.push(Token { kind, offset: start });
        position += length;
    }
    Ok(tokens)
}

/// A quoted string starting at `start`; a doubled quote inside stands for one quote (SQL style)
/// and a backslash escapes the next character.
fn lex_text(source: &str, start: usize) -> Result<(String, usize), FilterError> {
    let quote = source[start..].chars().next().unwrap_or('\'');
    let mut text = String::new();
    let mut characters = source[start + 1..].char_indices().peekable();
    while let Some((index, character)) = characters.next() {
        if character == quote {
            if characters.peek().is_some_and(|(_, next)| *next == quote) {
                characters.next();
                text.push(quote);
                continue;
            }
            return Ok((text, index + 2));
        }
        if character == '\\' {
            match characters.next() {
                Some((_, escaped)) => text.push(escaped),
                None => break,
            }
            continue;
        }
        text.push(character);
    }
    Err(FilterError { offset: start, message: "text is not closed by a matching quote".to_string() })
}

// ---- parsing ----

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    depth: usize,
    /// Offset reported for "ended too early".
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&TokenKind> {
        self.tokens.get(self.position).map(|token| &token.kind)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.position).map_or(self.end, |token| token.offset)
    }

    fn error(&self, message: impl Into<String>) -> FilterError {
        FilterError { offset: self.offset(), message: message.into() }
    }

    fn next(&mut self) -> Option<TokenKind> {
        let token = self.tokens.get(self.position)?.kind.clone();
        self.position += 1;
        Some(token)
    }

    fn expect(&mut self, wanted: &TokenKind, what: &str) -> Result<(), FilterError> {
        if self.peek() == Some(wanted) {
            self.position += 1;
            return Ok(());
        }
        let found = self.peek().map_or("the end".to_string(), ToString::to_string);
        Err(self.error(format!("expected {what}, found {found}")))
    }

    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Parser) -> Result<T, FilterError>,
    ) -> Result<T, FilterError> {
        if self.depth >= NESTING_MAX {
            return Err(self.error(format!("nested more than {NESTING_MAX} deep")));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.peek() == Some(&TokenKind::Or) {
            self.position += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.not()?;
        while self.peek() == Some(&TokenKind::And) {
            self.position += 1;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, FilterError> {
        if self.peek() == Some(&TokenKind::Not) {
            self.position += 1;
            return self.nested(|parser| Ok(Expr::Not(Box::new(parser.not()?))));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let left = self.operand()?;
        if let Some(TokenKind::Compare(op)) = self.peek() {
            let op = *op;
            self.position += 1;
            let right = self.operand()?;
            return Ok(Expr::Compare(Box::new(left), op, Box::new(right)));
        }
        Ok(left)
    }

    fn operand(&mut self) -> Result<Expr, FilterError> {
        let offset = self.offset();
        match self.next() {
            Some(TokenKind::Number(number)) => {
                Ok(Expr::Literal(serde_json::Number::from_f64(number).map_or(Json::Null, Json::Number)))
            }
            Some(TokenKind::Text(text)) => Ok(Expr::Literal(Json::String(text))),
            Some(TokenKind::OpenParen) => {
                let inner = self.nested(Parser::or)?;
                self.expect(&TokenKind::CloseParen, "')'")?;
                Ok(inner)
            }
            Some(TokenKind::Identifier(name)) => self.named(name, offset),
            Some(other) => Err(FilterError { offset, message: format!("expected a value, found {other}") }),
            None => Err(self.error("the filter ends where a value was expected")),
        }
    }

    /// A name: a literal keyword, a function call or a path.
    fn named(&mut self, name: String, offset: usize) -> Result<Expr, FilterError> {
        match name.to_ascii_lowercase().as_str() {
            "true" => return Ok(Expr::Literal(Json::Bool(true))),
            "false" => return Ok(Expr::Literal(Json::Bool(false))),
            "null" => return Ok(Expr::Literal(Json::Null)),
            _ => {}
        }
        if self.peek() == Some(&TokenKind::OpenParen) {
            let (function, arity) = Function::from_name(&name).ok_or_else(|| FilterError {
                offset,
                message: format!(
                    "unknown function {name:?} (known: exists, contains, starts_with, ends_with, lower, upper)"
                ),
            })?;
            self.position += 1;
            let mut arguments = Vec::new();
            if self.peek() != Some(&TokenKind::CloseParen) {
                loop {
                    arguments.push(self.nested(Parser::or)?);
                    if self.peek() != Some(&TokenKind::Comma) {
                        break;
                    }
                    self.position += 1;
                }
            }
            self.expect(&TokenKind::CloseParen, "')' closing the arguments")?;
            if arguments.len() != arity {
                return Err(FilterError {
                    offset,
                    message: format!("{name} takes {arity} argument(s), {} given", arguments.len()),
                });
            }
            if function == Function::Exists && !matches!(arguments.first(), Some(Expr::Path(_))) {
                return Err(FilterError {
                    offset,
                    message: "exists() takes a path such as value.a".to_string(),
                });
            }
            return Ok(Expr::Call(function, arguments));
        }
        let path = match name.as_str() {
            "key" => Path::Key,
            "topic" => Path::Topic,
            "partition" => Path::Partition,
            "offset" => Path::Offset,
            "timestamp" => Path::Timestamp,
            "headers" => Path::Header(self.header_name()?),
            "value" => Path::Value(self.steps()?),
            _ => {
                return Err(FilterError {
                    offset,
                    message: format!(
                        "unknown name {name:?}: a path starts with key, topic, partition, offset, timestamp, \
                         headers or value"
                    ),
                })
            }
        };
        Ok(Expr::Path(path))
    }

    fn header_name(&mut self) -> Result<String, FilterError> {
        let offset = self.offset();
        match self.next() {
            Some(TokenKind::Dot) => match self.next() {
                Some(TokenKind::Identifier(name)) => Ok(name),
                _ => Err(self.error("expected a header name after 'headers.'")),
            },
            Some(TokenKind::OpenBracket) => {
                let Some(TokenKind::Text(name)) = self.next() else {
                    return Err(self.error("expected a quoted header name after 'headers['"));
                };
                self.expect(&TokenKind::CloseBracket, "']'")?;
                Ok(name)
            }
            _ => Err(FilterError { offset, message: "headers is followed by .name or ['name']".to_string() }),
        }
    }

    fn steps(&mut self) -> Result<Vec<Step>, FilterError> {
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                Some(TokenKind::Dot) => {
                    self.position += 1;
                    match self.next() {
                        Some(TokenKind::Identifier(name)) => steps.push(Step::Field(name)),
                        _ => return Err(self.error("expected a field name after '.'")),
                    }
                }
                Some(TokenKind::OpenBracket) => {
                    self.position += 1;
                    let offset = self.offset();
                    match self.next() {
                        Some(TokenKind::Text(name)) => steps.push(Step::Field(name)),
                        Some(TokenKind::Number(number)) if number >= 0.0 && number.fract() == 0.0 => {
                            steps.push(Step::Index(number as usize))
                        }
                        _ => {
                            return Err(FilterError {
                                offset,
                                message: "expected a quoted field name or an index in [ ]".to_string(),
                            })
                        }
                    }
                    self.expect(&TokenKind::CloseBracket, "']'")?;
                }
                _ => return Ok(steps),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn event() -> Event {
        let mut event = Event::for_test(
            0,
            7,
            Some("sensor-7"),
            r#"{"temperature": 71.5, "unit": "C", "alarm": null, "readings": [{"ok": true}, {"ok": false}],
                "tags": ["hot", "roof"], "name with space": 1}"#,
        );
        event.headers = vec![
            ("type".to_string(), Some(Bytes::from_static(b"reading"))),
            ("ce_type".to_string(), Some(Bytes::from_static(b"com.example.reading"))),
            ("priority".to_string(), Some(Bytes::from_static(b"3"))),
        ];
        event
    }

    /// Parses `filter` and checks what it says about the sample event.
    fn check(filter: &str, expected: bool) {
        let parsed = Filter::parse(filter).unwrap_or_else(|error| panic!("{filter}: {error}"));
        assert_eq!(parsed.matches(&event()), expected, "{filter}");
    }

    #[test]
    fn conditions_over_value_headers_and_key() {
        check("value.temperature > 70", true);
        check("value.temperature > 70 AND headers.type = 'reading'", true);
        check("value.temperature > 70 && headers.type == \"other\"", false);
        check("value.temperature <= 71.5", true);
        check("value.temperature < 71.5", false);
        check("value.unit <> 'F'", true);
        check("key == 'sensor-7'", true);
        check("key = 'sensor-8' OR value.unit = 'C'", true);
        check("NOT (value.unit = 'C')", false);
        check("!exists(value.missing)", true);
        check("exists(value.alarm)", false);
        check("exists(value.unit)", true);
        check("value.readings[0].ok = true", true);
        check("value.readings[1].ok = true", false);
        check("value.readings[5].ok = true", false);
        check("value['name with space'] = 1", true);
        check("headers['ce_type'] = 'com.example.reading'", true);
        check("starts_with(headers.ce_type, 'com.example.')", true);
        check("ends_with(headers.ce_type, '.reading')", true);
        check("contains(value.tags, 'roof')", true);
        check("contains(value.unit, 'C')", true);
        check("lower(value.unit) = 'c'", true);
        check("upper(key) = 'SENSOR-7'", true);
        check("headers.priority >= 3", true);
        check("headers.priority > 3", false);
        check("partition = 0 and offset = 7", true);
        check("timestamp > 1600000000000", true);
        check("topic = 'events'", true);
    }

    #[test]
    fn values_of_different_types_are_neither_equal_nor_ordered() {
        check("value.unit > 3", false);
        check("value.unit = 3", false);
        check("value.unit != 3", true);
        check("value.missing = null", true);
        check("value.missing > 1", false);
    }

    #[test]
    fn a_value_that_is_not_json_is_text() {
        let mut event = event();
        event.value = Some(Bytes::from_static(b"plain text"));
        let whole = Filter::parse("value = 'plain text'").unwrap_or_else(|error| panic!("{error}"));
        assert!(whole.matches(&event));
        let field = Filter::parse("value.a = 'plain text'").unwrap_or_else(|error| panic!("{error}"));
        assert!(!field.matches(&event));
    }

    fn check_error(filter: &str, column: usize, message_part: &str) {
        let error = Filter::parse(filter).err().unwrap_or_else(|| panic!("{filter} parsed"));
        assert_eq!(error.offset + 1, column, "{filter}: {error}");
        assert!(error.message.contains(message_part), "{filter}: {error}");
    }

    #[test]
    fn errors_say_where_and_why() {
        check_error("value.a >", 10, "ends where a value was expected");
        check_error("valu.a = 1", 1, "unknown name \"valu\"");
        check_error("value.a = 'open", 11, "not closed");
        check_error("frobnicate(value.a)", 1, "unknown function");
        check_error("contains(value.a)", 1, "takes 2 argument");
        check_error("value.a = 1 value.b", 13, "after a complete condition");
        check_error("value.a = 1 # comment", 13, "unexpected character '#'");
        check_error("(value.a = 1", 13, "expected ')'");
        check_error("headers = 1", 9, "headers is followed by");
        check_error("exists('x')", 1, "takes a path");
    }

    #[test]
    fn limits_are_enforced_before_work() {
        let long = format!("value.a = '{}'", "x".repeat(FILTER_BYTES_MAX));
        assert!(Filter::parse(&long).is_err());
        let deep = format!("{}value.a = 1{}", "(".repeat(100), ")".repeat(100));
        let error = Filter::parse(&deep).err().unwrap_or_else(|| panic!("deep nesting parsed"));
        assert!(error.message.contains("nested more than"), "{error}");
        let nots = format!("{}true", "NOT ".repeat(100));
        assert!(Filter::parse(&nots).is_err());
    }

    #[test]
    fn a_filter_not_reading_the_value_does_not_parse_it() {
        let filter = Filter::parse("headers.type = 'reading'").unwrap_or_else(|error| panic!("{error}"));
        assert!(!filter.reads_value);
        let filter = Filter::parse("key = 'a' or value.x = 1").unwrap_or_else(|error| panic!("{error}"));
        assert!(filter.reads_value);
    }
}
