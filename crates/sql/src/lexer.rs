//! The lexer: SQL text to tokens, each with its line and column.
//!
//! It knows ASA's lexical rules: keywords and identifiers are case-insensitive words, `[quoted
//! identifiers]` and `"quoted identifiers"` may hold any character, strings use single quotes
//! with `''` as the escape, and comments are `-- to end of line` or `/* block */`. A character it
//! cannot place becomes a diagnostic and lexing continues, so one run reports every bad character.

use crate::error::{Diagnostic, Position};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// A bare word: keyword or identifier, as written.
    Word(String),
    /// `[name]` or `"name"`: always an identifier, never a keyword.
    QuotedIdent(String),
    Str(String),
    Int(i64),
    Float(f64),
    Symbol(&'static str),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) position: Position,
}

impl Token {
    /// True if this token is the bare word `keyword` (case-insensitive).
    pub(crate) fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.kind, TokenKind::Word(word) if word.eq_ignore_ascii_case(keyword))
    }

    pub(crate) fn is_symbol(&self, symbol: &str) -> bool {
        matches!(&self.kind, TokenKind::Symbol(found) if *found == symbol)
    }

    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Word(word) => format!("'{word}'"),
            TokenKind::QuotedIdent(name) => format!("identifier [{name}]"),
            TokenKind::Str(text) => format!("string '{text}'"),
            TokenKind::Int(value) => format!("number {value}"),
            TokenKind::Float(value) => format!("number {value}"),
            TokenKind::Symbol(symbol) => format!("'{symbol}'"),
            TokenKind::Eof => "end of query".to_string(),
        }
    }
}

/// Two-character symbols first so that `<=` is not lexed as `<` `=`. `{ } | ?` are only
/// meaningful in a MATCH_RECOGNIZE pattern (quantifiers and alternation).
const SYMBOLS: [&str; 22] = [
    "<=", ">=", "<>", "!=", "||", "(", ")", ",", ";", ".", "*", "+", "-", "/", "%", "<", ">", "=", "{", "}",
    "|", "?",
];

pub(crate) fn lex(text: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut tokens = Vec::new();
    let mut diagnostics = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut index = 0;
    let (mut line, mut column) = (1u32, 1u32);
    // Advances over `count` chars, keeping line and column right.
    let advance = |index: &mut usize, line: &mut u32, column: &mut u32, count: usize| {
        for _ in 0..count {
            if chars.get(*index) == Some(&'\n') {
                *line += 1;
                *column = 1;
            } else {
                *column += 1;
            }
            *index += 1;
        }
    };
    while index < chars.len() {
        let current = chars[index];
        let position = Position { line, column };
        let next = chars.get(index + 1).copied();
        if current.is_whitespace() {
            advance(&mut index, &mut line, &mut column, 1);
        } else if current == '-' && next == Some('-') {
            while index < chars.len() && chars[index] != '\n' {
                advance(&mut index, &mut line, &mut column, 1);
            }
        } else if current == '/' && next == Some('*') {
            advance(&mut index, &mut line, &mut column, 2);
            loop {
                if index >= chars.len() {
                    diagnostics.push(Diagnostic::new(position, "unterminated /* comment"));
                    break;
                }
                if chars[index] == '*' && chars.get(index + 1) == Some(&'/') {
                    advance(&mut index, &mut line, &mut column, 2);
                    break;
                }
                advance(&mut index, &mut line, &mut column, 1);
            }
        } else if current.is_alphabetic() || current == '_' || current == '@' {
            let start = index;
            while index < chars.len() && (chars[index].is_alphanumeric() || chars[index] == '_') {
                advance(&mut index, &mut line, &mut column, 1);
            }
            if index == start {
                advance(&mut index, &mut line, &mut column, 1);
            }
            let word: String = chars[start..index].iter().collect();
            tokens.push(Token { kind: TokenKind::Word(word), position });
        } else if current.is_ascii_digit() {
            let start = index;
            let mut is_float = false;
            while index < chars.len() {
                let here = chars[index];
                let is_exponent_sign = (here == '+' || here == '-')
                    && matches!(chars.get(index.wrapping_sub(1)), Some('e' | 'E'));
                if here.is_ascii_digit() || is_exponent_sign {
                    advance(&mut index, &mut line, &mut column, 1);
                } else if (here == '.' && !is_float && chars.get(index + 1).is_some_and(char::is_ascii_digit))
                    || here == 'e'
                    || here == 'E'
                {
                    is_float = true;
                    advance(&mut index, &mut line, &mut column, 1);
                } else {
                    break;
                }
            }
            let literal: String = chars[start..index].iter().collect();
            let kind = if is_float {
                literal.parse().ok().map(TokenKind::Float)
            } else {
                literal
                    .parse()
                    .ok()
                    .map(TokenKind::Int)
                    .or_else(|| literal.parse().ok().map(TokenKind::Float))
            };
            match kind {
                Some(kind) => tokens.push(Token { kind, position }),
                None => diagnostics.push(Diagnostic::new(position, format!("invalid number '{literal}'"))),
            }
        } else if current == '\'' {
            advance(&mut index, &mut line, &mut column, 1);
            let mut value = String::new();
            let mut closed = false;
            while index < chars.len() {
                if chars[index] == '\'' {
                    if chars.get(index + 1) == Some(&'\'') {
                        value.push('\'');
                        advance(&mut index, &mut line, &mut column, 2);
                        continue;
                    }
                    advance(&mut index, &mut line, &mut column, 1);
                    closed = true;
                    break;
                }
                value.push(chars[index]);
                advance(&mut index, &mut line, &mut column, 1);
            }
            if closed {
                tokens.push(Token { kind: TokenKind::Str(value), position });
            } else {
                diagnostics.push(Diagnostic::new(position, "unterminated string literal"));
            }
        } else if current == '[' || current == '"' {
            let close = if current == '[' { ']' } else { '"' };
            advance(&mut index, &mut line, &mut column, 1);
            let start = index;
            while index < chars.len() && chars[index] != close {
                advance(&mut index, &mut line, &mut column, 1);
            }
            if index < chars.len() {
                let name: String = chars[start..index].iter().collect();
                advance(&mut index, &mut line, &mut column, 1);
                tokens.push(Token { kind: TokenKind::QuotedIdent(name), position });
            } else {
                diagnostics.push(Diagnostic::new(
                    position,
                    format!("unterminated quoted identifier, expected '{close}'"),
                ));
            }
        } else {
            let symbol = SYMBOLS.iter().find(|symbol| {
                symbol.chars().enumerate().all(|(offset, wanted)| chars.get(index + offset) == Some(&wanted))
            });
            match symbol {
                Some(symbol) => {
                    tokens.push(Token { kind: TokenKind::Symbol(symbol), position });
                    advance(&mut index, &mut line, &mut column, symbol.len());
                }
                None => {
                    diagnostics.push(Diagnostic::new(position, format!("unexpected character '{current}'")));
                    advance(&mut index, &mut line, &mut column, 1);
                }
            }
        }
    }
    tokens.push(Token { kind: TokenKind::Eof, position: Position { line, column } });
    (tokens, diagnostics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        let (tokens, diagnostics) = lex(text);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        tokens.into_iter().map(|token| token.kind).collect()
    }

    #[test]
    fn words_numbers_strings_symbols() {
        use TokenKind::*;
        assert_eq!(
            kinds("SELECT a.b, 'it''s', 1.5, 42 <= [my col] -- comment\n/* block */ 1e3"),
            vec![
                Word("SELECT".into()),
                Word("a".into()),
                Symbol("."),
                Word("b".into()),
                Symbol(","),
                Str("it's".into()),
                Symbol(","),
                Float(1.5),
                Symbol(","),
                Int(42),
                Symbol("<="),
                QuotedIdent("my col".into()),
                Float(1000.0),
                Eof,
            ]
        );
    }

    #[test]
    fn positions_are_line_and_column() {
        let (tokens, _) = lex("SELECT\n  x");
        assert_eq!(tokens[1].position, Position { line: 2, column: 3 });
    }

    #[test]
    fn reports_every_bad_character() {
        let (_, diagnostics) = lex("SELECT # x\n $ 'open");
        let found: Vec<(u32, u32)> = diagnostics.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(found, vec![(1, 8), (2, 2), (2, 4)]);
    }

    #[test]
    fn pattern_symbols() {
        use TokenKind::*;
        assert_eq!(
            kinds("(A+ B{2,} | .?)"),
            vec![
                Symbol("("),
                Word("A".into()),
                Symbol("+"),
                Word("B".into()),
                Symbol("{"),
                Int(2),
                Symbol(","),
                Symbol("}"),
                Symbol("|"),
                Symbol("."),
                Symbol("?"),
                Symbol(")"),
                Eof,
            ]
        );
    }
}
