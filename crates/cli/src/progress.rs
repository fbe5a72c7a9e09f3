//! Progress of long client work (`produce` from a large file, `log verify`, `query run` catching
//! up, `topic delete-records` over many partitions): a bar on stderr when stderr is a terminal, and otherwise a plain line every
//! [`PLAIN_LINE_INTERVAL`] (`TIDEWATER_PROGRESS_INTERVAL_MS`), so a log file or CI output gets a
//! few lines rather than a bar's redraws. Work that ends sooner than the first interval prints
//! nothing in plain mode.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed when stderr is not a terminal, unless
/// `TIDEWATER_PROGRESS_INTERVAL_MS` says otherwise.
pub const PLAIN_LINE_INTERVAL: Duration = Duration::from_secs(5);
const PLAIN_LINE_INTERVAL_VARIABLE: &str = "TIDEWATER_PROGRESS_INTERVAL_MS";

fn plain_line_interval() -> Duration {
    std::env::var(PLAIN_LINE_INTERVAL_VARIABLE)
        .ok()
        .and_then(|value| value.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(PLAIN_LINE_INTERVAL)
}

/// What the counts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Records,
    Partitions,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Records => "records",
            Unit::Partitions => "partitions",
        }
    }
}

/// One piece of work's progress: `done` of an optional `total`.
#[derive(Debug)]
pub struct Progress {
    what: String,
    unit: Unit,
    total: Cell<Option<u64>>,
    bar: Option<indicatif::ProgressBar>,
    last_line: Cell<Instant>,
    interval: Duration,
    /// Whether a plain line was printed, so the end is said only where the start was.
    printed: Cell<bool>,
}

impl Progress {
    /// Progress of `what` (said at the start of each plain line), towards `total` if known.
    pub fn new(what: impl Into<String>, total: Option<u64>, unit: Unit) -> Progress {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Progress::with_terminal(what.into(), total, unit, terminal)
    }

    fn with_terminal(what: String, total: Option<u64>, unit: Unit, terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let bar = match total {
                Some(total) => indicatif::ProgressBar::new(total),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let template = match (total, unit) {
                (Some(_), Unit::Bytes) => {
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)"
                }
                (Some(_), Unit::Records) => "{prefix} [{bar:30}] {pos}/{len} records ({per_sec}, {eta} left)",
                (Some(_), Unit::Partitions) => "{prefix} [{bar:30}] {pos}/{len} partitions ({eta} left)",
                (None, _) => "{prefix} {spinner} {msg}",
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(what.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            what,
            unit,
            total: Cell::new(total),
            bar,
            last_line: Cell::new(Instant::now()),
            interval: plain_line_interval(),
            printed: Cell::new(false),
        }
    }

    /// Sets how much is done; in plain mode, prints a line if the interval has passed.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.last_line.get().elapsed() >= self.interval {
            self.last_line.set(Instant::now());
            self.printed.set(true);
            eprintln!("{}", self.line(done));
        }
    }

    /// A message in place of a count, for work without a total (a job's lag).
    pub fn message(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(text.to_string()),
            None if self.last_line.get().elapsed() >= self.interval => {
                self.last_line.set(Instant::now());
                self.printed.set(true);
                eprintln!("{}: {text}", self.what);
            }
            None => {}
        }
    }

    /// Ends the bar (leaving its last state on the terminal); nothing in plain mode.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    /// Ends with `text` in place of the last state; in plain mode a last line, if any was printed.
    pub fn finish_with(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(text.to_string()),
            None if self.printed.get() => eprintln!("{}: {text}", self.what),
            None => {}
        }
    }

    fn line(&self, done: u64) -> String {
        let unit = self.unit.name();
        match self.total.get() {
            Some(total) if total > 0 => {
                let percent = done.min(total) * 100 / total;
                format!("{}: {done} of {total} {unit} ({percent}%)", self.what)
            }
            _ => format!("{}: {done} {unit}", self.what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_how_far_of_how_much() {
        let check = |total: Option<u64>, unit: Unit, done: u64, expected: &str| {
            let progress = Progress::with_terminal("producing".to_string(), total, unit, false);
            assert_eq!(progress.line(done), expected);
        };
        check(Some(200), Unit::Bytes, 50, "producing: 50 of 200 bytes (25%)");
        check(Some(200), Unit::Bytes, 300, "producing: 300 of 200 bytes (100%)");
        check(Some(0), Unit::Records, 0, "producing: 0 records");
        check(None, Unit::Records, 7, "producing: 7 records");
    }
}
