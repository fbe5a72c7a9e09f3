//! The Prometheus text exposition format (version 0.0.4), written into a `String`: a `# HELP`
//! and a `# TYPE` line per family, then one line per sample. Label values are escaped as the
//! format requires (backslash, double quote, newline), so a topic name cannot break the page.

use std::fmt::Write;

use crate::metric::{Histogram, LATENCY_BUCKETS_SECONDS};

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// A page being written. Families are written one at a time: `family` first, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family: its help text (one line) and its type.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    /// One sample of a counter or gauge family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        self.text.push(' ');
        write_value(&mut self.text, value);
        self.text.push('\n');
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram series.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let counts = histogram.cumulative_counts();
        let bounds =
            LATENCY_BUCKETS_SECONDS.iter().map(|bound| bound.to_string()).chain(["+Inf".to_string()]);
        for (bound, count) in bounds.zip(counts) {
            let _ = write!(self.text, "{name}_bucket");
            write_labels(&mut self.text, labels, Some(&bound));
            let _ = writeln!(self.text, " {count}");
        }
        let _ = write!(self.text, "{name}_sum");
        write_labels(&mut self.text, labels, None);
        self.text.push(' ');
        write_value(&mut self.text, histogram.sum_seconds());
        let _ = write!(self.text, "\n{name}_count");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", counts[counts.len() - 1]);
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

fn write_labels(text: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    text.push('{');
    let mut first = true;
    for (name, value) in labels.iter().copied().chain(le.map(|bound| ("le", bound))) {
        if !first {
            text.push(',');
        }
        first = false;
        text.push_str(name);
        text.push_str("=\"");
        for character in value.chars() {
            match character {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                other => text.push(other),
            }
        }
        text.push('"');
    }
    text.push('}');
}

/// Integers as integers (counters read best that way), the rest as Rust prints an `f64`, with
/// the format's spellings of the infinities and NaN.
fn write_value(text: &mut String, value: f64) {
    if value.is_nan() {
        text.push_str("NaN");
    } else if value.is_infinite() {
        text.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(text, "{}", value as i64);
    } else {
        let _ = write!(text, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut page = Exposition::default();
        page.family("t_total", "help with a \\ and\na newline", MetricType::Counter);
        page.sample("t_total", &[("topic", "a\"b\\c\nd"), ("partition", "0")], 3.0);
        assert_eq!(
            page.into_text(),
            "# HELP t_total help with a \\\\ and\\na newline\n# TYPE t_total counter\n\
             t_total{topic=\"a\\\"b\\\\c\\nd\",partition=\"0\"} 3\n"
        );
    }

    #[test]
    fn values_are_written_as_the_format_spells_them() {
        let check = |value: f64, expected: &str| {
            let mut text = String::new();
            write_value(&mut text, value);
            assert_eq!(text, expected);
        };
        check(0.0, "0");
        check(-12.0, "-12");
        check(0.25, "0.25");
        check(f64::INFINITY, "+Inf");
        check(f64::NEG_INFINITY, "-Inf");
        check(f64::NAN, "NaN");
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_a_sum_and_a_count() {
        let histogram = Histogram::default();
        histogram.observe(std::time::Duration::from_millis(2));
        histogram.observe(std::time::Duration::from_secs(20));
        let mut page = Exposition::default();
        page.histogram("h_seconds", &[("api", "Produce")], &histogram);
        let text = page.into_text();
        assert!(text.contains("h_seconds_bucket{api=\"Produce\",le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("h_seconds_bucket{api=\"Produce\",le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("h_seconds_bucket{api=\"Produce\",le=\"10\"} 1\n"), "{text}");
        assert!(text.contains("h_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("h_seconds_sum{api=\"Produce\"} 20.002\n"), "{text}");
        assert!(text.contains("h_seconds_count{api=\"Produce\"} 2\n"), "{text}");
    }
}
