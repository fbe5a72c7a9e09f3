//! MATCH_RECOGNIZE against a brute-force model: for random event streams and random patterns
//! (concatenation, alternation, grouping, `.` and every quantifier), the engine's matches are
//! the ones a backtracking matcher finds, under both skip modes, with LIMIT DURATION, with
//! DEFINE conditions that read only the current row and conditions that read the rows mapped so
//! far, with one clock per key (`TIMESTAMP BY ... OVER`, one key's clock far behind) or one for
//! all, and across a checkpoint/restore at a random point (the corpus restores after every line).

use proptest::prelude::*;
use serde_json::json;
use tidewater_sql::{compile, JobOptions};

const VARIABLES: [&str; 3] = ["A", "B", "C"];
const LETTERS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Pattern {
    Variable(usize),
    Any,
    Concat(Vec<Pattern>),
    Alternation(Vec<Pattern>),
    Repeat(Box<Pattern>, u32, Option<u32>),
}

impl Pattern {
    fn nullable(&self) -> bool {
        match self {
            Pattern::Variable(_) | Pattern::Any => false,
            Pattern::Concat(items) => items.iter().all(Pattern::nullable),
            Pattern::Alternation(items) => items.iter().any(Pattern::nullable),
            Pattern::Repeat(inner, min, _) => *min == 0 || inner.nullable(),
        }
    }

    fn render(&self) -> String {
        match self {
            Pattern::Variable(index) => VARIABLES[*index].to_string(),
            Pattern::Any => ".".to_string(),
            Pattern::Concat(items) => items.iter().map(Pattern::render).collect::<Vec<_>>().join(" "),
            Pattern::Alternation(items) => {
                format!("({})", items.iter().map(Pattern::render).collect::<Vec<_>>().join(" | "))
            }
            Pattern::Repeat(inner, min, max) => {
                let operand = match **inner {
                    Pattern::Variable(_) | Pattern::Any | Pattern::Alternation(_) => inner.render(),
                    _ => format!("({})", inner.render()),
                };
                let quantifier = match (min, max) {
                    (0, None) => "*".to_string(),
                    (1, None) => "+".to_string(),
                    (0, Some(1)) => "?".to_string(),
                    (min, Some(max)) if min == max => format!("{{{min}}}"),
                    (0, Some(max)) => format!("{{,{max}}}"),
                    (min, None) => format!("{{{min},}}"),
                    (min, Some(max)) => format!("{{{min},{max}}}"),
                };
                format!("{operand}{quantifier}")
            }
        }
    }
}

fn pattern_strategy() -> impl Strategy<Value = Pattern> {
    let leaf = prop_oneof![4 => (0usize..3).prop_map(Pattern::Variable), 1 => Just(Pattern::Any)];
    let quantifier = prop_oneof![
        Just((0, None)),
        Just((1, None)),
        Just((0, Some(1))),
        Just((2, Some(2))),
        Just((2, None)),
        Just((1, Some(3))),
        Just((0, Some(2))),
    ];
    leaf.prop_recursive(3, 8, 3, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Pattern::Concat),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Pattern::Alternation),
            (inner, quantifier.clone()).prop_map(|(inner, (min, max))| {
                // A quantifier needs an operand that takes a row; the planner refuses others.
                if inner.nullable() {
                    inner
                } else {
                    Pattern::Repeat(Box::new(inner), min, max)
                }
            }),
        ]
    })
    .prop_filter("the pattern must need a row", |pattern| !pattern.nullable())
}

/// A DEFINE condition: the row's letter is one of `letters`, and with `max_count` the variable
/// has at most that many rows so far, this one included (which reads the match's rows).
#[derive(Debug, Clone)]
struct Condition {
    letters: Vec<usize>,
    max_count: Option<usize>,
}

fn condition_strategy() -> impl Strategy<Value = Option<Condition>> {
    prop_oneof![
        1 => Just(None),
        4 => (prop::sample::subsequence(vec![0usize, 1, 2], 1..=3), prop::option::weighted(0.5, 1usize..3))
            .prop_map(|(letters, max_count)| Some(Condition { letters, max_count })),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Event {
    id: usize,
    key: i64,
    letter: usize,
    time_ms: i64,
}

/// The rows of one key and the query's rules, matched by backtracking.
struct Model<'a> {
    rows: Vec<Event>,
    conditions: &'a [Option<Condition>; 3],
    duration_ms: i64,
}

/// Variable index 3 stands for `.`.
const ANY: usize = 3;

impl Model<'_> {
    fn accepts(&self, variable: usize, history: &[usize], position: usize) -> bool {
        if variable == ANY {
            return true;
        }
        let Some(condition) = &self.conditions[variable] else { return true };
        let count = history.iter().filter(|mapped| **mapped == variable).count() + 1;
        condition.letters.contains(&self.rows[position].letter)
            && condition.max_count.is_none_or(|max_count| count <= max_count)
    }

    /// Matches `pattern` at `position` and calls `next` with where it ended, trying the
    /// alternatives in the order the pattern prefers; true as soon as `next` accepts.
    fn matches(
        &self,
        pattern: &Pattern,
        start: usize,
        position: usize,
        history: &mut Vec<usize>,
        next: &mut dyn FnMut(usize, &mut Vec<usize>) -> bool,
    ) -> bool {
        match pattern {
            Pattern::Variable(_) | Pattern::Any => {
                let variable = match pattern {
                    Pattern::Variable(index) => *index,
                    _ => ANY,
                };
                let in_time = position < self.rows.len()
                    && self.rows[position].time_ms - self.rows[start].time_ms <= self.duration_ms;
                if !in_time || !self.accepts(variable, history, position) {
                    return false;
                }
                history.push(variable);
                if next(position + 1, history) {
                    return true;
                }
                history.pop();
                false
            }
            Pattern::Concat(items) => self.sequence(items, start, position, history, next),
            Pattern::Alternation(items) => {
                items.iter().any(|item| self.matches(item, start, position, history, &mut *next))
            }
            Pattern::Repeat(inner, min, max) => {
                self.repeat(inner, *min, *max, 0, start, position, history, next)
            }
        }
    }

    fn sequence(
        &self,
        items: &[Pattern],
        start: usize,
        position: usize,
        history: &mut Vec<usize>,
        next: &mut dyn FnMut(usize, &mut Vec<usize>) -> bool,
    ) -> bool {
        match items.split_first() {
            None => next(position, history),
            Some((first, rest)) => self.matches(first, start, position, history, &mut |after, history| {
                self.sequence(rest, start, after, history, &mut *next)
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn repeat(
        &self,
        inner: &Pattern,
        min: u32,
        max: Option<u32>,
        done: u32,
        start: usize,
        position: usize,
        history: &mut Vec<usize>,
        next: &mut dyn FnMut(usize, &mut Vec<usize>) -> bool,
    ) -> bool {
        let another = |history: &mut Vec<usize>, next: &mut dyn FnMut(usize, &mut Vec<usize>) -> bool| {
            self.matches(inner, start, position, history, &mut |after, history| {
                self.repeat(inner, min, max, done + 1, start, after, history, &mut *next)
            })
        };
        if done < min {
            return another(history, next);
        }
        // Greedy: one more iteration first, then stopping here.
        if max.is_none_or(|max| done < max) && another(history, &mut *next) {
            return true;
        }
        next(position, history)
    }

    /// The matches in order, as (first index, last index, variables), under a skip mode.
    fn all_matches(&self, pattern: &Pattern, past_last_row: bool) -> Vec<(usize, usize, Vec<usize>)> {
        let mut found = Vec::new();
        let mut start = 0;
        while start < self.rows.len() {
            let mut matched = None;
            self.matches(pattern, start, start, &mut Vec::new(), &mut |_, history| {
                matched = Some(history.clone());
                true
            });
            match matched {
                Some(variables) => {
                    let end = start + variables.len() - 1;
                    found.push((start, end, variables));
                    start = if past_last_row { end + 1 } else { start + 1 };
                }
                None => start += 1,
            }
        }
        found
    }
}

fn define_clause(conditions: &[Option<Condition>; 3], pattern: &Pattern) -> String {
    let text = pattern.render();
    let defines: Vec<String> = conditions
        .iter()
        .enumerate()
        .filter_map(|(index, condition)| {
            let condition = condition.as_ref()?;
            // DEFINE may only name variables the pattern uses.
            if !text.contains(VARIABLES[index]) {
                return None;
            }
            let name = VARIABLES[index];
            let letters: Vec<String> =
                condition.letters.iter().map(|letter| format!("'{}'", LETTERS[*letter])).collect();
            let mut text = format!("{name} AS {name}.v IN ({})", letters.join(", "));
            if let Some(max_count) = condition.max_count {
                text.push_str(&format!(" AND COUNT({name}.v) <= {max_count}"));
            }
            Some(text)
        })
        .collect();
    if defines.is_empty() {
        String::new()
    } else {
        format!("DEFINE {}", defines.join(", "))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn matches_equal_a_backtracking_matcher(
        pattern in pattern_strategy(),
        conditions in [condition_strategy(), condition_strategy(), condition_strategy()],
        raw_events in prop::collection::vec((0i64..2, 0usize..3, 0i64..3), 0..16),
        duration_seconds in 1i64..12,
        past_last_row in any::<bool>(),
        substreams in any::<bool>(),
        restore_after in 0usize..16,
    ) {
        // With TIMESTAMP BY ... OVER k, key 1's clock runs ten minutes behind key 0's: its
        // events are on time for its own clock, and the matches are the same.
        let lag_ms = if substreams { 600_000 } else { 0 };
        let mut time_ms = 0;
        let events: Vec<Event> = raw_events
            .iter()
            .enumerate()
            .map(|(id, &(key, letter, gap_seconds))| {
                time_ms += gap_seconds * 1_000;
                Event { id, key, letter, time_ms: time_ms - key * lag_ms }
            })
            .collect();
        let skip = if past_last_row { "PAST LAST ROW" } else { "TO NEXT ROW" };
        let query = format!(
            "SELECT * INTO o FROM i TIMESTAMP BY t {} MATCH_RECOGNIZE (LIMIT DURATION(second, {duration_seconds}) \
             PARTITION BY k MEASURES FIRST(id) AS first_id, LAST(id) AS last_id, Classifier() AS classes \
             AFTER MATCH SKIP {skip} PATTERN ({}) {}) AS m",
            if substreams { "OVER k" } else { "" },
            pattern.render(),
            define_clause(&conditions, &pattern),
        );
        let fresh = || compile(&query, JobOptions::default()).map_err(|error| TestCaseError::fail(format!("{query}: {error:?}")));
        let mut job = fresh()?;
        let mut steps = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let letter = LETTERS[event.letter];
            steps.push(job.push("i", 0, &json!({"id": event.id, "k": event.key, "v": letter, "t": event.time_ms}), 0));
            if index == restore_after {
                let checkpoint = serde_json::from_str(&job.checkpoint().to_string())
                    .map_err(|error| TestCaseError::fail(error.to_string()))?;
                job = fresh()?;
                prop_assert_eq!(job.restore(&checkpoint), Ok(()));
            }
        }
        steps.push(job.finish());
        let mut actual: Vec<(i64, usize, usize, Vec<String>)> = Vec::new();
        for step in steps {
            prop_assert!(step.errors.is_empty() && step.late.is_empty(), "{:?}", step);
            for output in step.outputs {
                let row = &output.row;
                let key = row["k"].as_i64().unwrap_or(-1);
                let first = row["first_id"].as_u64().unwrap_or(u64::MAX) as usize;
                let last = row["last_id"].as_u64().unwrap_or(u64::MAX) as usize;
                let classes = row["classes"].as_array().into_iter().flatten().map(|name| name.as_str().unwrap_or("").to_string()).collect();
                prop_assert_eq!(output.timestamp_ms, events.get(last).map_or(-1, |event| event.time_ms));
                actual.push((key, first, last, classes));
            }
        }
        let mut expected = Vec::new();
        for key in 0..2 {
            let rows: Vec<Event> = events.iter().copied().filter(|event| event.key == key).collect();
            let model = Model { rows, conditions: &conditions, duration_ms: duration_seconds * 1_000 };
            for (first, last, variables) in model.all_matches(&pattern, past_last_row) {
                let classes = variables.iter().map(|variable| if *variable == ANY { ".".to_string() } else { VARIABLES[*variable].to_string() }).collect();
                expected.push((key, model.rows[first].id, model.rows[last].id, classes));
            }
        }
        // Per key, matches come out in the order of their first rows.
        let per_key = |matches: &[(i64, usize, usize, Vec<String>)], key: i64| -> Vec<(usize, usize, Vec<String>)> {
            matches.iter().filter(|found| found.0 == key).map(|found| (found.1, found.2, found.3.clone())).collect()
        };
        for key in 0..2 {
            prop_assert_eq!(per_key(&actual, key), per_key(&expected, key), "key {} of {}", key, query);
        }
        prop_assert_eq!(actual.len(), expected.len());
    }
}
