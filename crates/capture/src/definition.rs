//! A capture as a definition: which topic, where to, how files are cut and which columns they
//! hold. The same JSON in the captures registry and, built from flags, for `capture run`.
//!
//! `validate` names the bad setting; a runner validates before it starts, so a definition that
//! a newer version wrote with settings this one cannot honour fails loudly rather than
//! capturing something else.

use crate::destination::Destination;
use crate::encode::ColumnMode;

/// The default time window: a file is closed at most this long after its first record arrived
/// (Event Hubs Capture's default window too).
pub const DEFAULT_WINDOW_SECS: u64 = 300;
/// The default size window: a file is closed once its records weigh this much.
pub const DEFAULT_WINDOW_BYTES: u64 = 64 * 1024 * 1024;
/// The largest size window: a file is built in memory and uploaded in one PUT, so this bounds
/// memory per assigned partition and stays below S3's 5 GiB limit for one PUT.
pub const WINDOW_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// The longest time window: a day.
pub const WINDOW_SECS_MAX: u64 = 86_400;
/// A capture name's length limit (it becomes part of a consumer group id).
pub const NAME_BYTES_MAX: usize = 200;

/// One capture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaptureDefinition {
    pub name: String,
    pub topic: String,
    /// `file:///dir` or `s3://bucket/prefix`.
    pub to: String,
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    #[serde(default = "default_window_bytes")]
    pub window_bytes: u64,
    #[serde(default)]
    pub columns: ColumnMode,
    /// A paused capture is not run; its committed offsets stay, so it resumes where it stopped.
    #[serde(default)]
    pub paused: bool,
}

fn default_window_secs() -> u64 {
    DEFAULT_WINDOW_SECS
}

fn default_window_bytes() -> u64 {
    DEFAULT_WINDOW_BYTES
}

impl CaptureDefinition {
    /// The consumer group the capture's instances share.
    pub fn group_id(&self) -> String {
        format!("tidewater-capture-{}", self.name)
    }

    /// Checks every setting; the error names the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= NAME_BYTES_MAX
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(format!(
                "name {:?}: use 1 to {NAME_BYTES_MAX} letters, digits, '.', '_' or '-'",
                self.name
            ));
        }
        // The topic is a directory name in the layout: Kafka's own topic rules keep it one.
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self.topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && self.topic != "."
            && self.topic != "..";
        if !topic_ok {
            return Err(format!("topic {:?}: not a valid Kafka topic name", self.topic));
        }
        if !(1..=WINDOW_SECS_MAX).contains(&self.window_secs) {
            return Err(format!("window_secs {}: must be 1 to {WINDOW_SECS_MAX}", self.window_secs));
        }
        if !(1..=WINDOW_BYTES_MAX).contains(&self.window_bytes) {
            return Err(format!("window_bytes {}: must be 1 to {WINDOW_BYTES_MAX}", self.window_bytes));
        }
        Destination::parse(&self.to).map(|_| ()).map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> CaptureDefinition {
        CaptureDefinition {
            name: "c1".into(),
            topic: "telemetry".into(),
            to: "file:///tmp/x".into(),
            window_secs: DEFAULT_WINDOW_SECS,
            window_bytes: DEFAULT_WINDOW_BYTES,
            columns: ColumnMode::Raw,
            paused: false,
        }
    }

    fn check_invalid(change: impl FnOnce(&mut CaptureDefinition), expected: &str) {
        let mut definition = definition();
        change(&mut definition);
        let error = definition.validate().err().unwrap_or_default();
        assert!(error.contains(expected), "expected {expected:?} in {error:?}");
    }

    #[test]
    fn validation_names_the_bad_setting() {
        assert_eq!(definition().validate(), Ok(()));
        check_invalid(|d| d.name = "a b".into(), "name");
        check_invalid(|d| d.topic = "../etc".into(), "topic");
        check_invalid(|d| d.window_secs = 0, "window_secs");
        check_invalid(|d| d.window_bytes = WINDOW_BYTES_MAX + 1, "window_bytes");
        check_invalid(|d| d.to = "ftp://x".into(), "destination");
    }

    #[test]
    fn json_defaults_fill_missing_settings() {
        let parsed: CaptureDefinition =
            serde_json::from_str(r#"{"name":"c1","topic":"telemetry","to":"file:///tmp/x"}"#)
                .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(parsed, definition());
        let json: CaptureDefinition = serde_json::from_str(
            r#"{"name":"c1","topic":"telemetry","to":"file:///tmp/x","columns":"json","future_setting":1}"#,
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(json.columns, ColumnMode::Json);
    }
}
