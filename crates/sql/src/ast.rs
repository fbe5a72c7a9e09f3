//! The syntax tree the parser produces and the planner consumes. It keeps every node's position
//! for diagnostics and nothing else: no types, no resolved names.

use crate::error::Position;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnaryOp {
    Neg,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

impl BinaryOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Concat => "||",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
        }
    }
}

/// `OVER (PARTITION BY ... LIMIT DURATION(unit, n) WHEN cond)` after an analytic function or a
/// session window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Over {
    pub(crate) partition_by: Vec<Expr>,
    /// `ORDER BY expr [ASC|DESC], ...` (for TopOne); `true` means descending.
    pub(crate) order_by: Vec<(Expr, bool)>,
    pub(crate) limit_duration: Option<(Expr, Expr)>,
    pub(crate) when: Option<Box<Expr>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExprKind {
    Literal(Literal),
    /// `a`, `a.b.c`, `[my col].x`: a column, possibly followed by nested record fields.
    Path(Vec<String>),
    Call {
        name: String,
        args: Vec<Expr>,
        star: bool,
        distinct: bool,
        over: Option<Box<Over>>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    IsNull {
        operand: Box<Expr>,
        negated: bool,
    },
    Between {
        operand: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    InList {
        operand: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        operand: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast {
        operand: Box<Expr>,
        type_name: String,
        is_try: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub(crate) kind: ExprKind,
    pub(crate) position: Position,
}

impl Expr {
    /// A position-free rendering used to compare expressions structurally (a SELECT expression
    /// against the GROUP BY list) and to name unnamed output columns.
    pub(crate) fn canonical(&self) -> String {
        fn list(exprs: &[Expr]) -> String {
            exprs.iter().map(Expr::canonical).collect::<Vec<_>>().join(", ")
        }
        match &self.kind {
            ExprKind::Literal(Literal::Null) => "NULL".to_string(),
            ExprKind::Literal(Literal::Int(value)) => value.to_string(),
            ExprKind::Literal(Literal::Float(value)) => format!("{value:?}"),
            ExprKind::Literal(Literal::Str(text)) => format!("'{}'", text.replace('\'', "''")),
            ExprKind::Path(segments) => {
                segments.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>().join(".")
            }
            ExprKind::Call { name, args, star, distinct, over } => {
                let mut text = format!("{}(", name.to_lowercase());
                if *distinct {
                    text.push_str("DISTINCT ");
                }
                text.push_str(&if *star { "*".to_string() } else { list(args) });
                text.push(')');
                if let Some(over) = over {
                    text.push_str(&format!(" OVER (PARTITION BY {}", list(&over.partition_by)));
                    for (key, descending) in &over.order_by {
                        text.push_str(&format!(
                            " ORDER BY {} {}",
                            key.canonical(),
                            if *descending { "DESC" } else { "ASC" }
                        ));
                    }
                    if let Some((unit, size)) = &over.limit_duration {
                        text.push_str(&format!(
                            " LIMIT DURATION({}, {})",
                            unit.canonical(),
                            size.canonical()
                        ));
                    }
                    if let Some(when) = &over.when {
                        text.push_str(&format!(" WHEN {}", when.canonical()));
                    }
                    text.push(')');
                }
                text
            }
            ExprKind::Unary { op: UnaryOp::Neg, operand } => format!("-({})", operand.canonical()),
            ExprKind::Unary { op: UnaryOp::Not, operand } => format!("NOT ({})", operand.canonical()),
            ExprKind::Binary { op, left, right } => {
                format!("({} {} {})", left.canonical(), op.symbol(), right.canonical())
            }
            ExprKind::IsNull { operand, negated } => {
                format!("({} IS {}NULL)", operand.canonical(), if *negated { "NOT " } else { "" })
            }
            ExprKind::Between { operand, low, high, negated } => format!(
                "({} {}BETWEEN {} AND {})",
                operand.canonical(),
                if *negated { "NOT " } else { "" },
                low.canonical(),
                high.canonical()
            ),
            ExprKind::InList { operand, list: items, negated } => {
                format!(
                    "({} {}IN ({}))",
                    operand.canonical(),
                    if *negated { "NOT " } else { "" },
                    list(items)
                )
            }
            ExprKind::Like { operand, pattern, negated } => format!(
                "({} {}LIKE {})",
                operand.canonical(),
                if *negated { "NOT " } else { "" },
                pattern.canonical()
            ),
            ExprKind::Case { operand, whens, otherwise } => {
                let mut text = "CASE".to_string();
                if let Some(operand) = operand {
                    text.push_str(&format!(" {}", operand.canonical()));
                }
                for (condition, result) in whens {
                    text.push_str(&format!(" WHEN {} THEN {}", condition.canonical(), result.canonical()));
                }
                if let Some(otherwise) = otherwise {
                    text.push_str(&format!(" ELSE {}", otherwise.canonical()));
                }
                text.push_str(" END");
                text
            }
            ExprKind::Cast { operand, type_name, is_try } => format!(
                "{}CAST({} AS {})",
                if *is_try { "TRY_" } else { "" },
                operand.canonical(),
                type_name.to_lowercase()
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SelectItem {
    /// `*`: every field of the input row.
    Star(Position),
    Expr {
        expr: Expr,
        alias: Option<String>,
    },
}

/// `CROSS APPLY GetArrayElements(expr) AS name` (or `GetRecordProperties`): one row per element.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CrossApply {
    pub(crate) call: Expr,
    pub(crate) alias: String,
}

/// `JOIN input [alias] [TIMESTAMP BY expr] ON condition` (inner join, time-bounded).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Join {
    pub(crate) right: (String, Position),
    pub(crate) right_alias: Option<String>,
    pub(crate) right_timestamp_by: Option<Expr>,
    pub(crate) right_timestamp_over: Vec<Expr>,
    pub(crate) on: Expr,
    /// `LEFT [OUTER] JOIN`: left rows without a match come out once with the right side NULL.
    pub(crate) left_outer: bool,
}

/// Where `AFTER MATCH SKIP` resumes the search once a match is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipMode {
    /// `SKIP TO NEXT ROW`: at the row after the match's first row (matches may overlap).
    ToNextRow,
    /// `SKIP PAST LAST ROW`: at the row after the match's last row (the SQL standard's default).
    PastLastRow,
}

/// A row pattern, as written in `PATTERN (...)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PatternKind {
    /// A pattern variable.
    Variable(String),
    /// `.`: any row.
    Any,
    Concat(Vec<Pattern>),
    Alternation(Vec<Pattern>),
    /// `*` (0, None), `+` (1, None), `?` (0, Some(1)), `{n}`, `{n,}`, `{n,m}`, `{,m}`.
    Repeat {
        inner: Box<Pattern>,
        min: u32,
        max: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pattern {
    pub(crate) kind: PatternKind,
    pub(crate) position: Position,
}

/// `MATCH_RECOGNIZE (...) [AS] alias` after FROM, in ASA's syntax with Flink's spellings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MatchRecognize {
    pub(crate) position: Position,
    /// `LIMIT DURATION (unit, n)`, or Flink's `WITHIN INTERVAL 'n' UNIT`: (unit, n).
    pub(crate) limit_duration: Option<(Expr, Expr)>,
    pub(crate) partition_by: Vec<Expr>,
    /// Flink's `ORDER BY`: accepted when it names the event time.
    pub(crate) order_by: Vec<(Expr, bool)>,
    pub(crate) measures: Vec<(Expr, Option<String>)>,
    /// `None`: not written (the standard's default, `PAST LAST ROW`).
    pub(crate) skip: Option<SkipMode>,
    pub(crate) pattern: Pattern,
    /// `name AS condition`, with the name's position.
    pub(crate) define: Vec<(String, Position, Expr)>,
    pub(crate) alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Select {
    pub(crate) position: Position,
    pub(crate) items: Vec<SelectItem>,
    pub(crate) into: Option<(String, Position)>,
    pub(crate) from: (String, Position),
    pub(crate) from_alias: Option<String>,
    pub(crate) timestamp_by: Option<Expr>,
    /// `TIMESTAMP BY expr OVER key, ...`: each key value has its own event-time clock.
    pub(crate) timestamp_over: Vec<Expr>,
    pub(crate) match_recognize: Option<Box<MatchRecognize>>,
    pub(crate) cross_apply: Option<CrossApply>,
    pub(crate) join: Option<Join>,
    pub(crate) where_clause: Option<Expr>,
    pub(crate) group_by: Vec<Expr>,
    pub(crate) having: Option<Expr>,
}

/// One SELECT of the job: either a named step (`WITH name AS (SELECT ...)`) or a statement
/// writing `INTO` an output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    pub(crate) cte_name: Option<(String, Position)>,
    pub(crate) select: Select,
}
