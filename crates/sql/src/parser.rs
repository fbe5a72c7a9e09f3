//! The parser: tokens to statements, by recursive descent, with a Pratt loop for expressions.
//!
//! On a syntax error it records a diagnostic, skips to the next statement boundary (`;`, or a
//! `SELECT`/`WITH` outside parentheses) and carries on, so that one compile reports the errors of
//! every statement. Nesting is bounded by [`EXPRESSION_DEPTH_MAX`] so that a hostile query cannot
//! overflow the stack.

use crate::ast::{
    BinaryOp, CrossApply, Expr, ExprKind, Join, Literal, MatchRecognize, Over, Pattern, PatternKind, Select,
    SelectItem, SkipMode, Statement, UnaryOp,
};
use crate::error::{Diagnostic, Position};
use crate::lexer::{Token, TokenKind};

/// The deepest expression nesting the parser accepts.
pub const EXPRESSION_DEPTH_MAX: usize = 128;

/// Words that end an expression or a clause and so cannot be bare identifiers or aliases.
const RESERVED: [&str; 35] = [
    "LEFT",
    "OUTER",
    "CROSS",
    "APPLY",
    "JOIN",
    "INNER",
    "ON",
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "INTO",
    "AS",
    "WITH",
    "TIMESTAMP",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "BETWEEN",
    "IN",
    "LIKE",
    "OVER",
    "PARTITION",
    "LIMIT",
    "MATCH_RECOGNIZE",
];

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|reserved| reserved.eq_ignore_ascii_case(word))
}

/// The marker for "a diagnostic has been recorded"; the caller recovers.
pub(crate) struct Failed;

pub(crate) type Parsed<T> = Result<T, Failed>;

pub(crate) struct Parser {
    tokens: Vec<Token>,
    index: usize,
    depth: usize,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Parser {
    pub(crate) fn new(tokens: Vec<Token>) -> Parser {
        Parser { tokens, index: 0, depth: 0, diagnostics: Vec::new() }
    }

    fn peek(&self) -> &Token {
        // The lexer always ends the list with Eof and the parser never moves past it.
        &self.tokens[self.index.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, ahead: usize) -> &Token {
        &self.tokens[(self.index + ahead).min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != TokenKind::Eof {
            self.index += 1;
        }
        token
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        if self.peek().is_keyword(keyword) {
            self.index += 1;
            true
        } else {
            false
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if self.peek().is_symbol(symbol) {
            self.index += 1;
            true
        } else {
            false
        }
    }

    fn error<T>(&mut self, position: Position, message: impl Into<String>) -> Parsed<T> {
        self.diagnostics.push(Diagnostic::new(position, message));
        Err(Failed)
    }

    fn expected<T>(&mut self, what: &str) -> Parsed<T> {
        let token = self.peek().clone();
        self.error(token.position, format!("expected {what}, found {}", token.describe()))
    }

    fn expect_keyword(&mut self, keyword: &str) -> Parsed<()> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            self.expected(keyword)
        }
    }

    fn expect_symbol(&mut self, symbol: &str) -> Parsed<()> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            self.expected(&format!("'{symbol}'"))
        }
    }

    /// An identifier: a non-reserved word or a quoted identifier.
    fn identifier(&mut self, what: &str) -> Parsed<(String, Position)> {
        let token = self.peek().clone();
        match token.kind {
            TokenKind::Word(word) if !is_reserved(&word) => {
                self.index += 1;
                Ok((word, token.position))
            }
            TokenKind::QuotedIdent(name) => {
                self.index += 1;
                Ok((name, token.position))
            }
            _ => self.expected(what),
        }
    }

    /// Parses the whole job: CTEs and statements, recovering after errors.
    pub(crate) fn parse_job(&mut self) -> Vec<Statement> {
        let mut statements = Vec::new();
        loop {
            while self.eat_symbol(";") {}
            if self.peek().kind == TokenKind::Eof {
                break;
            }
            let start = self.index;
            let result = if self.eat_keyword("WITH") {
                self.parse_ctes(&mut statements)
            } else if self.peek().is_keyword("SELECT") {
                self.parse_select().map(|select| statements.push(Statement { cte_name: None, select }))
            } else {
                self.expected("SELECT or WITH")
            };
            if result.is_err() {
                self.recover(start);
            }
        }
        statements
    }

    fn parse_ctes(&mut self, statements: &mut Vec<Statement>) -> Parsed<()> {
        loop {
            let name = self.identifier("a name for the WITH step")?;
            self.expect_keyword("AS")?;
            self.expect_symbol("(")?;
            let select = self.parse_select()?;
            self.expect_symbol(")")?;
            statements.push(Statement { cte_name: Some(name), select });
            if !self.eat_symbol(",") {
                return Ok(());
            }
        }
    }

    /// Skips to the start of the next statement. Always moves forward at least one token.
    fn recover(&mut self, start: usize) {
        if self.index == start {
            self.bump();
        }
        let mut depth = 0i32;
        loop {
            let token = self.peek();
            if token.kind == TokenKind::Eof || token.is_symbol(";") {
                return;
            }
            if depth <= 0 && (token.is_keyword("SELECT") || token.is_keyword("WITH")) {
                return;
            }
            if token.is_symbol("(") {
                depth += 1;
            } else if token.is_symbol(")") {
                depth -= 1;
            }
            self.bump();
        }
    }

    fn parse_select(&mut self) -> Parsed<Select> {
        let position = self.peek().position;
        self.expect_keyword("SELECT")?;
        let mut items = Vec::new();
        loop {
            if self.peek().is_symbol("*") {
                let star = self.bump();
                items.push(SelectItem::Star(star.position));
            } else {
                let expr = self.parse_expr(0)?;
                let has_alias = self.eat_keyword("AS")
                    || matches!(&self.peek().kind, TokenKind::Word(word) if !is_reserved(word))
                    || matches!(self.peek().kind, TokenKind::QuotedIdent(_));
                let alias = if has_alias { Some(self.identifier("a column alias")?.0) } else { None };
                items.push(SelectItem::Expr { expr, alias });
            }
            if !self.eat_symbol(",") {
                break;
            }
        }
        let into =
            if self.eat_keyword("INTO") { Some(self.identifier("an output name after INTO")?) } else { None };
        self.expect_keyword("FROM")?;
        let from = self.identifier("an input name after FROM")?;
        let has_alias = self.eat_keyword("AS")
            || matches!(&self.peek().kind, TokenKind::Word(word) if !is_reserved(word));
        let from_alias = if has_alias { Some(self.identifier("an alias for the input")?.0) } else { None };
        // ASA writes TIMESTAMP BY and CROSS APPLY in either order.
        let mut timestamp_by = None;
        let mut timestamp_over = Vec::new();
        let mut cross_apply = None;
        loop {
            if timestamp_by.is_none() && self.eat_keyword("TIMESTAMP") {
                self.expect_keyword("BY")?;
                timestamp_by = Some(self.parse_expr(0)?);
                timestamp_over = self.parse_timestamp_over()?;
            } else if cross_apply.is_none() && self.eat_keyword("CROSS") {
                self.expect_keyword("APPLY")?;
                let call = self.parse_expr(0)?;
                self.eat_keyword("AS");
                let (alias, _) = self.identifier("a name for the CROSS APPLY rows")?;
                cross_apply = Some(CrossApply { call, alias });
            } else {
                break;
            }
        }
        let match_recognize = if self.peek().is_keyword("MATCH_RECOGNIZE") {
            Some(Box::new(self.parse_match_recognize()?))
        } else {
            None
        };
        if self.peek().is_keyword("PARTITION") {
            let position = self.peek().position;
            return self.error(
                position,
                "FROM ... PARTITION BY is not supported yet (watermarks are kept per partition anyway)",
            );
        }
        let join = if self.peek().is_keyword("JOIN")
            || self.peek().is_keyword("INNER")
            || self.peek().is_keyword("LEFT")
        {
            let left_outer = self.eat_keyword("LEFT");
            if left_outer {
                self.eat_keyword("OUTER");
            } else {
                self.eat_keyword("INNER");
            }
            self.expect_keyword("JOIN")?;
            let right = self.identifier("an input name after JOIN")?;
            let has_alias = self.eat_keyword("AS")
                || matches!(&self.peek().kind, TokenKind::Word(word) if !is_reserved(word));
            let right_alias =
                if has_alias { Some(self.identifier("an alias for the input")?.0) } else { None };
            let (right_timestamp_by, right_timestamp_over) = if self.eat_keyword("TIMESTAMP") {
                self.expect_keyword("BY")?;
                (Some(self.parse_expr(0)?), self.parse_timestamp_over()?)
            } else {
                (None, Vec::new())
            };
            self.expect_keyword("ON")?;
            let on = self.parse_expr(0)?;
            Some(Join { right, right_alias, right_timestamp_by, right_timestamp_over, on, left_outer })
        } else {
            None
        };
        let where_clause = if self.eat_keyword("WHERE") { Some(self.parse_expr(0)?) } else { None };
        let mut group_by = Vec::new();
        if self.eat_keyword("GROUP") {
            self.expect_keyword("BY")?;
            loop {
                group_by.push(self.parse_expr(0)?);
                if !self.eat_symbol(",") {
                    break;
                }
            }
        }
        let having = if self.eat_keyword("HAVING") { Some(self.parse_expr(0)?) } else { None };
        let next = self.peek();
        let at_boundary = next.kind == TokenKind::Eof
            || next.is_symbol(";")
            || next.is_symbol(")")
            || next.is_keyword("SELECT")
            || next.is_keyword("WITH");
        if !at_boundary {
            return self.expected("end of statement");
        }
        Ok(Select {
            position,
            items,
            into,
            from,
            from_alias,
            timestamp_by,
            timestamp_over,
            match_recognize,
            cross_apply,
            join,
            where_clause,
            group_by,
            having,
        })
    }

    /// The Pratt loop: parses an expression whose operators bind tighter than `min_power`.
    pub(crate) fn parse_expr(&mut self, min_power: u8) -> Parsed<Expr> {
        // `depth` counts the levels of the tree being built above this point: one per call here
        // and one per operator the loop below wraps around its left operand, since `a + b + c`
        // nests as deeply as `(a + (b + c))` and later passes recurse over the tree.
        let saved_depth = self.depth;
        let result = self.deeper().and_then(|()| self.parse_expr_inner(min_power));
        self.depth = saved_depth;
        result
    }

    fn deeper(&mut self) -> Parsed<()> {
        self.depth += 1;
        if self.depth > EXPRESSION_DEPTH_MAX {
            let position = self.peek().position;
            return self
                .error(position, format!("expression nested deeper than {EXPRESSION_DEPTH_MAX} levels"));
        }
        Ok(())
    }

    fn parse_expr_inner(&mut self, min_power: u8) -> Parsed<Expr> {
        let mut left = self.parse_prefix()?;
        loop {
            let token = self.peek().clone();
            let position = left.position;
            // Postfix predicates: IS [NOT] NULL, [NOT] BETWEEN/IN/LIKE, all at comparison power.
            let negated_predicate = token.is_keyword("NOT")
                && (self.peek_at(1).is_keyword("BETWEEN")
                    || self.peek_at(1).is_keyword("IN")
                    || self.peek_at(1).is_keyword("LIKE"));
            if token.is_keyword("IS")
                || token.is_keyword("BETWEEN")
                || token.is_keyword("IN")
                || token.is_keyword("LIKE")
                || negated_predicate
            {
                if COMPARISON_POWER <= min_power {
                    break;
                }
                self.deeper()?;
                let negated = self.eat_keyword("NOT");
                let keyword = self.bump();
                let operand = Box::new(left);
                let kind = if keyword.is_keyword("IS") {
                    let negated = self.eat_keyword("NOT");
                    self.expect_keyword("NULL")?;
                    ExprKind::IsNull { operand, negated }
                } else if keyword.is_keyword("BETWEEN") {
                    let low = Box::new(self.parse_expr(COMPARISON_POWER)?);
                    self.expect_keyword("AND")?;
                    let high = Box::new(self.parse_expr(COMPARISON_POWER)?);
                    ExprKind::Between { operand, low, high, negated }
                } else if keyword.is_keyword("IN") {
                    self.expect_symbol("(")?;
                    let list = self.parse_expr_list()?;
                    self.expect_symbol(")")?;
                    ExprKind::InList { operand, list, negated }
                } else {
                    let pattern = Box::new(self.parse_expr(COMPARISON_POWER)?);
                    ExprKind::Like { operand, pattern, negated }
                };
                left = Expr { kind, position };
                continue;
            }
            let Some((op, power)) = binary_operator(&token) else { break };
            if power <= min_power {
                break;
            }
            self.bump();
            self.deeper()?;
            let right = self.parse_expr(power)?;
            left = Expr {
                kind: ExprKind::Binary { op, left: Box::new(left), right: Box::new(right) },
                position,
            };
        }
        Ok(left)
    }

    fn parse_expr_list(&mut self) -> Parsed<Vec<Expr>> {
        let mut list = vec![self.parse_expr(0)?];
        while self.eat_symbol(",") {
            list.push(self.parse_expr(0)?);
        }
        Ok(list)
    }

    fn parse_prefix(&mut self) -> Parsed<Expr> {
        let token = self.bump();
        let position = token.position;
        let kind = match token.kind {
            TokenKind::Int(value) => ExprKind::Literal(Literal::Int(value)),
            TokenKind::Float(value) => ExprKind::Literal(Literal::Float(value)),
            TokenKind::Str(text) => ExprKind::Literal(Literal::Str(text)),
            TokenKind::Symbol("(") => {
                let inner = self.parse_expr(0)?;
                self.expect_symbol(")")?;
                return Ok(inner);
            }
            TokenKind::Symbol("-") => {
                let operand = self.parse_expr(UNARY_POWER)?;
                match operand.kind {
                    ExprKind::Literal(Literal::Int(value)) if value != i64::MIN => {
                        ExprKind::Literal(Literal::Int(-value))
                    }
                    ExprKind::Literal(Literal::Float(value)) => ExprKind::Literal(Literal::Float(-value)),
                    _ => ExprKind::Unary { op: UnaryOp::Neg, operand: Box::new(operand) },
                }
            }
            TokenKind::Symbol("+") => return self.parse_expr(UNARY_POWER),
            TokenKind::Word(word) if word.eq_ignore_ascii_case("NOT") => {
                let operand = self.parse_expr(NOT_POWER)?;
                ExprKind::Unary { op: UnaryOp::Not, operand: Box::new(operand) }
            }
            TokenKind::Word(word) if word.eq_ignore_ascii_case("NULL") => ExprKind::Literal(Literal::Null),
            TokenKind::Word(word) if word.eq_ignore_ascii_case("CASE") => self.parse_case()?,
            TokenKind::Word(word)
                if (word.eq_ignore_ascii_case("CAST") || word.eq_ignore_ascii_case("TRY_CAST"))
                    && self.peek().is_symbol("(") =>
            {
                self.bump();
                let operand = Box::new(self.parse_expr(0)?);
                self.expect_keyword("AS")?;
                let (mut type_name, _) = self.identifier("a type name")?;
                if self.eat_symbol("(") {
                    let argument = self.bump();
                    let argument = match argument.kind {
                        TokenKind::Word(word) => word,
                        TokenKind::Int(value) => value.to_string(),
                        _ => return self.error(argument.position, "expected a type length such as max"),
                    };
                    self.expect_symbol(")")?;
                    type_name = format!("{type_name}({argument})");
                }
                self.expect_symbol(")")?;
                ExprKind::Cast { operand, type_name, is_try: word.eq_ignore_ascii_case("TRY_CAST") }
            }
            TokenKind::Word(word) if !is_reserved(&word) => self.parse_path_or_call(word)?,
            TokenKind::QuotedIdent(name) => self.parse_path_or_call(name)?,
            _ => return self.error(position, format!("expected an expression, found {}", token.describe())),
        };
        Ok(Expr { kind, position })
    }

    fn parse_path_or_call(&mut self, first: String) -> Parsed<ExprKind> {
        let mut segments = vec![first];
        while self.peek().is_symbol(".") {
            self.bump();
            let token = self.bump();
            match token.kind {
                TokenKind::Word(word) => segments.push(word),
                TokenKind::QuotedIdent(name) => segments.push(name),
                _ => {
                    return self.error(
                        token.position,
                        format!("expected a field name after '.', found {}", token.describe()),
                    )
                }
            }
        }
        if !self.eat_symbol("(") {
            return Ok(ExprKind::Path(segments));
        }
        let name = segments.join(".");
        let mut args = Vec::new();
        let mut star = false;
        let distinct = self.eat_keyword("DISTINCT");
        if self.eat_symbol("*") {
            star = true;
        } else if !self.peek().is_symbol(")") {
            args = self.parse_expr_list()?;
        }
        self.expect_symbol(")")?;
        // `OVER (` is the function's window; `TIMESTAMP BY f(x) OVER key` is the input's substreams.
        let over = if self.peek().is_keyword("OVER") && self.peek_at(1).is_symbol("(") {
            self.bump();
            Some(Box::new(self.parse_over()?))
        } else {
            None
        };
        Ok(ExprKind::Call { name, args, star, distinct, over })
    }

    /// `OVER key, ...` after `TIMESTAMP BY expr`: the input's substream keys (none without OVER).
    fn parse_timestamp_over(&mut self) -> Parsed<Vec<Expr>> {
        if self.eat_keyword("OVER") {
            self.parse_expr_list()
        } else {
            Ok(Vec::new())
        }
    }

    /// `MATCH_RECOGNIZE ( clauses ) [AS] alias`. The clauses may come in any order (ASA's
    /// examples write PARTITION BY and LIMIT DURATION either way round), each at most once.
    fn parse_match_recognize(&mut self) -> Parsed<MatchRecognize> {
        let position = self.peek().position;
        self.expect_keyword("MATCH_RECOGNIZE")?;
        self.expect_symbol("(")?;
        let mut limit_duration = None;
        let mut partition_by = None;
        let mut order_by = None;
        let mut measures = None;
        let mut skip = None;
        let mut pattern = None;
        let mut define = None;
        let mut seen: Vec<&'static str> = Vec::new();
        while !self.peek().is_symbol(")") {
            let token = self.peek().clone();
            let clause = [
                "LIMIT",
                "WITHIN",
                "PARTITION",
                "ORDER",
                "MEASURES",
                "ONE",
                "ALL",
                "AFTER",
                "PATTERN",
                "DEFINE",
                "SUBSET",
            ]
            .into_iter()
            .find(|keyword| token.is_keyword(keyword));
            let Some(clause) = clause else {
                return self.expected("a MATCH_RECOGNIZE clause (LIMIT DURATION, PARTITION BY, MEASURES, AFTER MATCH SKIP, PATTERN, DEFINE) or ')'");
            };
            // LIMIT DURATION and WITHIN INTERVAL are two spellings of one clause.
            let name = if clause == "WITHIN" { "LIMIT" } else { clause };
            if seen.contains(&name) {
                return self
                    .error(token.position, format!("{} appears twice in MATCH_RECOGNIZE", token.describe()));
            }
            seen.push(name);
            self.bump();
            match clause {
                "LIMIT" => {
                    let (word, word_position) = self.identifier("DURATION")?;
                    if !word.eq_ignore_ascii_case("DURATION") {
                        return self
                            .error(word_position, format!("expected DURATION after LIMIT, found '{word}'"));
                    }
                    self.expect_symbol("(")?;
                    let unit = self.parse_expr(0)?;
                    self.expect_symbol(",")?;
                    let size = self.parse_expr(0)?;
                    self.expect_symbol(")")?;
                    limit_duration = Some((unit, size));
                }
                "WITHIN" => limit_duration = Some(self.parse_within_interval()?),
                "PARTITION" => {
                    self.expect_keyword("BY")?;
                    partition_by = Some(self.parse_expr_list()?);
                }
                "ORDER" => {
                    self.expect_keyword("BY")?;
                    let mut keys = Vec::new();
                    loop {
                        let key = self.parse_expr(0)?;
                        let descending = self.eat_keyword("DESC");
                        if !descending {
                            self.eat_keyword("ASC");
                        }
                        keys.push((key, descending));
                        if !self.eat_symbol(",") {
                            break;
                        }
                    }
                    order_by = Some(keys);
                }
                "MEASURES" => {
                    let mut list = Vec::new();
                    loop {
                        let expr = self.parse_expr(0)?;
                        let alias = if self.eat_keyword("AS") {
                            Some(self.identifier("a measure name")?.0)
                        } else {
                            None
                        };
                        list.push((expr, alias));
                        if !self.eat_symbol(",") {
                            break;
                        }
                    }
                    measures = Some(list);
                }
                "ONE" => {
                    self.expect_keyword("ROW")?;
                    self.expect_keyword("PER")?;
                    self.expect_keyword("MATCH")?;
                }
                "ALL" => {
                    return self.error(
                        token.position,
                        "ALL ROWS PER MATCH is not supported: MATCH_RECOGNIZE gives one row per match",
                    );
                }
                "AFTER" => {
                    self.expect_keyword("MATCH")?;
                    self.expect_keyword("SKIP")?;
                    let mode_position = self.peek().position;
                    if self.eat_keyword("PAST") {
                        self.expect_keyword("LAST")?;
                        self.expect_keyword("ROW")?;
                        skip = Some(SkipMode::PastLastRow);
                    } else {
                        self.expect_keyword("TO")?;
                        if self.eat_keyword("NEXT") {
                            self.expect_keyword("ROW")?;
                            skip = Some(SkipMode::ToNextRow);
                        } else {
                            return self.error(
                                mode_position,
                                "only AFTER MATCH SKIP TO NEXT ROW and AFTER MATCH SKIP PAST LAST ROW are supported",
                            );
                        }
                    }
                }
                "PATTERN" => {
                    self.expect_symbol("(")?;
                    pattern = Some(self.parse_pattern_alternation()?);
                    self.expect_symbol(")")?;
                }
                "DEFINE" => {
                    let mut list = Vec::new();
                    loop {
                        let (name, name_position) = self.identifier("a pattern variable to define")?;
                        self.expect_keyword("AS")?;
                        let condition = self.parse_expr(0)?;
                        list.push((name, name_position, condition));
                        if !self.eat_symbol(",") {
                            break;
                        }
                    }
                    define = Some(list);
                }
                _ => return self.error(token.position, "SUBSET is not supported in MATCH_RECOGNIZE"),
            }
        }
        let close = self.bump();
        let Some(pattern) = pattern else {
            return self.error(close.position, "MATCH_RECOGNIZE needs a PATTERN (...)");
        };
        let has_alias = self.eat_keyword("AS")
            || matches!(&self.peek().kind, TokenKind::Word(word) if !is_reserved(word))
            || matches!(self.peek().kind, TokenKind::QuotedIdent(_));
        let alias =
            if has_alias { Some(self.identifier("a name for the MATCH_RECOGNIZE rows")?.0) } else { None };
        Ok(MatchRecognize {
            position,
            limit_duration,
            partition_by: partition_by.unwrap_or_default(),
            order_by: order_by.unwrap_or_default(),
            measures: measures.unwrap_or_default(),
            skip,
            pattern,
            define: define.unwrap_or_default(),
            alias,
        })
    }

    /// Flink's `WITHIN INTERVAL 'n' UNIT` (after `WITHIN`), as the (unit, n) of LIMIT DURATION.
    fn parse_within_interval(&mut self) -> Parsed<(Expr, Expr)> {
        self.expect_keyword("INTERVAL")?;
        let size = self.bump();
        let count = match &size.kind {
            TokenKind::Str(text) => text.trim().parse::<i64>().ok(),
            TokenKind::Int(value) => Some(*value),
            _ => None,
        };
        let Some(count) = count else {
            return self.error(
                size.position,
                format!("expected a whole number such as '10', found {}", size.describe()),
            );
        };
        let (unit, unit_position) = self.identifier("a time unit")?;
        // Flink writes units in the singular or plural (SECOND, MINUTES).
        let unit = match unit.to_ascii_lowercase().as_str() {
            "seconds" => "second".to_string(),
            "minutes" => "minute".to_string(),
            "hours" => "hour".to_string(),
            "days" => "day".to_string(),
            "milliseconds" => "millisecond".to_string(),
            _ => unit,
        };
        Ok((
            Expr { kind: ExprKind::Path(vec![unit]), position: unit_position },
            Expr { kind: ExprKind::Literal(Literal::Int(count)), position: size.position },
        ))
    }

    /// `a | b | ...`, each a concatenation.
    fn parse_pattern_alternation(&mut self) -> Parsed<Pattern> {
        let saved_depth = self.depth;
        let result = self.deeper().and_then(|()| {
            let position = self.peek().position;
            let mut alternatives = vec![self.parse_pattern_concat()?];
            while self.eat_symbol("|") {
                alternatives.push(self.parse_pattern_concat()?);
            }
            Ok(if alternatives.len() == 1 {
                alternatives.remove(0)
            } else {
                Pattern { kind: PatternKind::Alternation(alternatives), position }
            })
        });
        self.depth = saved_depth;
        result
    }

    fn parse_pattern_concat(&mut self) -> Parsed<Pattern> {
        let position = self.peek().position;
        let mut items = Vec::new();
        while !self.peek().is_symbol(")") && !self.peek().is_symbol("|") {
            items.push(self.parse_pattern_quantified()?);
        }
        match items.len() {
            0 => self.expected("a pattern variable, '.' or '('"),
            1 => Ok(items.remove(0)),
            _ => Ok(Pattern { kind: PatternKind::Concat(items), position }),
        }
    }

    fn parse_pattern_quantified(&mut self) -> Parsed<Pattern> {
        let token = self.bump();
        let position = token.position;
        let kind = match token.kind {
            TokenKind::Symbol("(") => {
                let inner = self.parse_pattern_alternation()?;
                self.expect_symbol(")")?;
                inner.kind
            }
            TokenKind::Symbol(".") => PatternKind::Any,
            TokenKind::Word(word) if !is_reserved(&word) => PatternKind::Variable(word),
            TokenKind::QuotedIdent(name) => PatternKind::Variable(name),
            _ => {
                return self.error(
                    position,
                    format!("expected a pattern variable, '.' or '(', found {}", token.describe()),
                )
            }
        };
        let mut pattern = Pattern { kind, position };
        let quantifier = self.peek().clone();
        let bounds = if self.eat_symbol("*") {
            Some((0, None))
        } else if self.eat_symbol("+") {
            Some((1, None))
        } else if self.eat_symbol("?") {
            Some((0, Some(1)))
        } else if self.eat_symbol("{") {
            Some(self.parse_pattern_bounds()?)
        } else {
            None
        };
        if let Some((min, max)) = bounds {
            if self.peek().is_symbol("?") {
                let position = self.peek().position;
                return self.error(
                    position,
                    "reluctant quantifiers (*?, +?, ...) are not supported; quantifiers are greedy",
                );
            }
            if max.is_some_and(|max| max < min) || max == Some(0) {
                return self.error(quantifier.position, "a quantifier {n,m} needs 0 <= n <= m and m > 0");
            }
            pattern = Pattern { kind: PatternKind::Repeat { inner: Box::new(pattern), min, max }, position };
        }
        Ok(pattern)
    }

    /// `{n}`, `{n,}`, `{n,m}` or `{,m}` (after the `{`).
    fn parse_pattern_bounds(&mut self) -> Parsed<(u32, Option<u32>)> {
        let count = |parser: &mut Parser| -> Parsed<u32> {
            let token = parser.bump();
            match token.kind {
                TokenKind::Int(value) => u32::try_from(value).or_else(|_| {
                    parser.error(token.position, format!("a quantifier bound must be at most {}", u32::MAX))
                }),
                _ => parser.error(
                    token.position,
                    format!("expected a number in the quantifier, found {}", token.describe()),
                ),
            }
        };
        let bounds = if self.eat_symbol(",") {
            (0, Some(count(self)?))
        } else {
            let min = count(self)?;
            if self.eat_symbol(",") {
                if self.peek().is_symbol("}") {
                    (min, None)
                } else {
                    (min, Some(count(self)?))
                }
            } else {
                (min, Some(min))
            }
        };
        self.expect_symbol("}")?;
        Ok(bounds)
    }

    fn parse_over(&mut self) -> Parsed<Over> {
        self.expect_symbol("(")?;
        let mut over =
            Over { partition_by: Vec::new(), order_by: Vec::new(), limit_duration: None, when: None };
        if self.eat_keyword("PARTITION") {
            self.expect_keyword("BY")?;
            over.partition_by = self.parse_expr_list()?;
        }
        if self.eat_keyword("ORDER") {
            self.expect_keyword("BY")?;
            loop {
                let key = self.parse_expr(0)?;
                let descending = self.eat_keyword("DESC");
                if !descending {
                    self.eat_keyword("ASC");
                }
                over.order_by.push((key, descending));
                if !self.eat_symbol(",") {
                    break;
                }
            }
        }
        if self.eat_keyword("LIMIT") {
            let (word, position) = self.identifier("DURATION")?;
            if !word.eq_ignore_ascii_case("DURATION") {
                return self.error(position, format!("expected DURATION after LIMIT, found '{word}'"));
            }
            self.expect_symbol("(")?;
            let unit = self.parse_expr(0)?;
            self.expect_symbol(",")?;
            let size = self.parse_expr(0)?;
            self.expect_symbol(")")?;
            over.limit_duration = Some((unit, size));
        }
        if self.eat_keyword("WHEN") {
            over.when = Some(Box::new(self.parse_expr(0)?));
        }
        self.expect_symbol(")")?;
        Ok(over)
    }

    fn parse_case(&mut self) -> Parsed<ExprKind> {
        let operand = if self.peek().is_keyword("WHEN") { None } else { Some(Box::new(self.parse_expr(0)?)) };
        let mut whens = Vec::new();
        while self.eat_keyword("WHEN") {
            let condition = self.parse_expr(0)?;
            self.expect_keyword("THEN")?;
            let result = self.parse_expr(0)?;
            whens.push((condition, result));
        }
        if whens.is_empty() {
            return self.expected("WHEN");
        }
        let otherwise = if self.eat_keyword("ELSE") { Some(Box::new(self.parse_expr(0)?)) } else { None };
        self.expect_keyword("END")?;
        Ok(ExprKind::Case { operand, whens, otherwise })
    }
}

const NOT_POWER: u8 = 3;
const COMPARISON_POWER: u8 = 4;
const UNARY_POWER: u8 = 7;

fn binary_operator(token: &Token) -> Option<(BinaryOp, u8)> {
    if token.is_keyword("OR") {
        return Some((BinaryOp::Or, 1));
    }
    if token.is_keyword("AND") {
        return Some((BinaryOp::And, 2));
    }
    let TokenKind::Symbol(symbol) = token.kind else { return None };
    let operator = match symbol {
        "=" => (BinaryOp::Eq, COMPARISON_POWER),
        "<>" | "!=" => (BinaryOp::NotEq, COMPARISON_POWER),
        "<" => (BinaryOp::Lt, COMPARISON_POWER),
        "<=" => (BinaryOp::LtEq, COMPARISON_POWER),
        ">" => (BinaryOp::Gt, COMPARISON_POWER),
        ">=" => (BinaryOp::GtEq, COMPARISON_POWER),
        "+" => (BinaryOp::Add, 5),
        "-" => (BinaryOp::Sub, 5),
        "||" => (BinaryOp::Concat, 5),
        "*" => (BinaryOp::Mul, 6),
        "/" => (BinaryOp::Div, 6),
        "%" => (BinaryOp::Mod, 6),
        _ => return None,
    };
    Some(operator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::lex;

    fn parse(text: &str) -> (Vec<Statement>, Vec<Diagnostic>) {
        let (tokens, mut diagnostics) = lex(text);
        let mut parser = Parser::new(tokens);
        let statements = parser.parse_job();
        diagnostics.extend(parser.diagnostics);
        (statements, diagnostics)
    }

    fn expr(text: &str) -> String {
        let (tokens, _) = lex(text);
        let mut parser = Parser::new(tokens);
        match parser.parse_expr(0) {
            Ok(expr) => expr.canonical(),
            Err(Failed) => format!("error: {:?}", parser.diagnostics),
        }
    }

    #[test]
    fn precedence() {
        assert_eq!(expr("1 + 2 * 3 - 4"), "((1 + (2 * 3)) - 4)");
        assert_eq!(expr("a = 1 OR b = 2 AND NOT c > 3"), "((a = 1) OR ((b = 2) AND NOT ((c > 3))))");
        assert_eq!(expr("-x * 2"), "(-(x) * 2)");
        assert_eq!(expr("a IS NOT NULL AND b NOT IN (1, 2)"), "((a IS NOT NULL) AND (b NOT IN (1, 2)))");
        assert_eq!(expr("x BETWEEN 1 AND 3 AND y LIKE 'a%'"), "((x BETWEEN 1 AND 3) AND (y LIKE 'a%'))");
    }

    #[test]
    fn calls_paths_case_cast() {
        assert_eq!(expr("COUNT(DISTINCT a.b.[c d])"), "count(DISTINCT a.b.c d)");
        assert_eq!(expr("System.Timestamp()"), "system.timestamp()");
        assert_eq!(expr("CAST(x AS nvarchar(max))"), "CAST(x AS nvarchar(max))");
        assert_eq!(
            expr("CASE WHEN x > 1 THEN 'big' ELSE 'small' END"),
            "CASE WHEN (x > 1) THEN 'big' ELSE 'small' END"
        );
        assert_eq!(
            expr("LAG(t, 2) OVER (PARTITION BY id LIMIT DURATION(minute, 1) WHEN t > 0)"),
            "lag(t, 2) OVER (PARTITION BY id LIMIT DURATION(minute, 1) WHEN (t > 0))"
        );
    }

    #[test]
    fn statements_and_ctes() {
        let (statements, diagnostics) = parse(
            "WITH a AS (SELECT * FROM input TIMESTAMP BY t), b AS (SELECT x FROM a)\n\
             SELECT x AS y INTO out1 FROM a WHERE x > 1; SELECT COUNT(*) INTO out2 FROM b GROUP BY TumblingWindow(s, 5)",
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(statements.len(), 4);
        assert_eq!(statements[0].cte_name.as_ref().map(|(name, _)| name.as_str()), Some("a"));
        assert!(statements[0].select.timestamp_by.is_some());
        assert_eq!(statements[3].select.group_by.len(), 1);
    }

    #[test]
    fn recovers_and_reports_each_statement() {
        let (statements, diagnostics) =
            parse("SELECT a INTO o FROM\nSELECT (b INTO o FROM i\nSELECT c INTO o FROM i");
        let found: Vec<(u32, u32)> = diagnostics.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(found, vec![(2, 1), (2, 11)]);
        assert_eq!(statements.len(), 1);
    }

    #[test]
    fn long_operator_chains_are_bounded_too() {
        let chain = vec!["1"; EXPRESSION_DEPTH_MAX + 1].join(" + ");
        assert!(expr(&chain).contains("nested deeper"));
        let chain = vec!["1"; EXPRESSION_DEPTH_MAX / 2].join(" + ");
        assert!(!expr(&chain).contains("error"));
        // After an error the depth is back to zero for the next statement.
        let text =
            format!("SELECT {} INTO o FROM i; SELECT 1 + 1 AS two INTO o FROM i", vec!["1"; 500].join(" + "));
        let (statements, diagnostics) = parse(&text);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert_eq!(statements.len(), 1);
    }

    #[test]
    fn depth_is_bounded() {
        let text =
            format!("{}1{}", "(".repeat(EXPRESSION_DEPTH_MAX + 1), ")".repeat(EXPRESSION_DEPTH_MAX + 1));
        assert!(expr(&text).contains("nested deeper"));
    }
}
