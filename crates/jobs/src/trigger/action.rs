//! The actions a trigger performs, and how each answer is classified.
//!
//! One attempt of one delivery (an event, or a batch) ends in one of four ways, which the
//! delivery loop turns into acknowledging, retrying, dead-lettering or disabling the trigger:
//!
//! | action | acknowledged | retried | dead-lettered at once | disables the trigger |
//! |---|---|---|---|---|
//! | webhook | 2xx | 408, 429, 5xx (honouring `Retry-After`), timeouts, connection errors | other statuses (3xx, 4xx) | 410 Gone |
//! | command | exit 0 | any other exit, a timeout (the process is killed), failure to start | exit 65 (`EX_DATAERR`) | never |
//! | device command | the record is on the commands topic (acks=all) | a failed send | no device id in the event | never |

use std::time::Duration;

use bytes::Bytes;
use rdkafka::message::Header;
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tidewater_client::cloudevents::{CloudEvent, HttpMode};
use tidewater_client::QuietContext;
use tokio::io::AsyncWriteExt;

use super::cloudevent::from_event;
use super::definition::{Action, DeviceSource};
use super::retry::parse_retry_after;
use super::signature::SigningKey;
use crate::event::Event;

/// How much of a refusing receiver's answer (response body, stderr) is kept for the dead-letter
/// record's reason.
const REASON_DETAIL_BYTES_MAX: usize = 512;
/// Exit status a command uses to say "this event is bad, do not retry it" (sysexits.h).
pub const EXIT_DATA_ERROR: i32 = 65;

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Acknowledged,
    Retry { reason: String, retry_after: Option<Duration> },
    Reject { reason: String },
    Gone { reason: String },
}

/// An action, ready to run: clients built, secrets decoded.
#[derive(Debug)]
pub enum Executor {
    Webhook(Webhook),
    Command(Command),
    DeviceCommand(DeviceCommand),
}

impl Executor {
    /// Builds the executor of `action`. `producer` sends device commands.
    pub fn new(
        trigger: &str,
        action: &Action,
        producer: FutureProducer<QuietContext>,
        batched: bool,
    ) -> Result<Executor, String> {
        Ok(match action {
            Action::Webhook { url, mode, secret, timeout_ms, headers } => {
                let mut extra = HeaderMap::new();
                for (name, value) in headers {
                    let name = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("{name:?} is not an HTTP header name"))?;
                    let value = HeaderValue::from_str(value)
                        .map_err(|_| format!("header {name} has an invalid value"))?;
                    extra.insert(name, value);
                }
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_millis(*timeout_ms))
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("tidewater/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|error| format!("building the HTTP client: {error}"))?;
                Executor::Webhook(Webhook {
                    client,
                    url: url.clone(),
                    mode: *mode,
                    key: secret.as_deref().map(SigningKey::parse).transpose()?,
                    extra_headers: extra,
                    batched,
                })
            }
            Action::Command { program, args, timeout_ms } => Executor::Command(Command {
                trigger: trigger.to_string(),
                program: program.clone(),
                args: args.clone(),
                timeout: Duration::from_millis(*timeout_ms),
                batched,
            }),
            Action::DeviceCommand { commands_topic, device } => Executor::DeviceCommand(DeviceCommand {
                trigger: trigger.to_string(),
                producer,
                topic: commands_topic.clone(),
                source: DeviceSource::parse(device)?,
            }),
        })
    }

    /// Makes one attempt at delivering `events` (in order). `attempt` counts from 1.
    pub async fn attempt(&self, events: &[Event], attempt: u32) -> Attempt {
        match self {
            Executor::Webhook(webhook) => webhook.attempt(events).await,
            Executor::Command(command) => command.attempt(events, attempt).await,
            Executor::DeviceCommand(device) => device.attempt(events).await,
        }
    }
}

/// POSTs CloudEvents to a URL.
#[derive(Debug)]
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    mode: HttpMode,
    key: Option<SigningKey>,
    extra_headers: HeaderMap,
    batched: bool,
}

impl Webhook {
    async fn attempt(&self, events: &[Event]) -> Attempt {
        let Some(first) = events.first() else { return Attempt::Acknowledged };
        let cloud_events: Vec<CloudEvent> = events.iter().map(from_event).collect();
        let (content, webhook_id) = if self.batched {
            (CloudEvent::to_batch(&cloud_events), format!("batch-{}-{}", first.id(), events.len()))
        } else {
            let cloud_event = &cloud_events[0];
            let content = match self.mode {
                HttpMode::Binary => cloud_event.to_binary(),
                HttpMode::Structured => cloud_event.to_structured(),
            };
            (content, cloud_event.id.clone())
        };
        let mut request = self.client.post(&self.url).headers(self.extra_headers.clone());
        for (name, value) in &content.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(key) = &self.key {
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs() as i64);
            request = request
                .header("webhook-id", webhook_id.as_str())
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", key.sign(&webhook_id, timestamp, &content.body));
        }
        let response = match request.body(content.body).send().await {
            Ok(response) => response,
            Err(error) => {
                let kind = if error.is_timeout() { "timed out" } else { "failed" };
                return Attempt::Retry {
                    reason: format!("POST {} {kind}: {error}", self.url),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, std::time::SystemTime::now()));
        if status.is_success() {
            // The body is not needed; dropping it unread is fine (the connection is not reused).
            return Attempt::Acknowledged;
        }
        let detail = body_excerpt(response).await;
        let reason = format!("HTTP {status} from {}{detail}", self.url);
        match status.as_u16() {
            410 => Attempt::Gone { reason },
            408 | 429 | 500..=599 => Attempt::Retry { reason, retry_after },
            _ => Attempt::Reject { reason },
        }
    }
}

/// The start of a response body, for a reason string: at most `REASON_DETAIL_BYTES_MAX` bytes.
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut excerpt = Vec::new();
    while excerpt.len() < REASON_DETAIL_BYTES_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
            _ => break,
        }
    }
    excerpt.truncate(REASON_DETAIL_BYTES_MAX);
    let text = String::from_utf8_lossy(&excerpt);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Runs a local program per delivery.
///
/// The event's value is the program's stdin (for a batch: one structured CloudEvent JSON per
/// line), and its position is in the environment: `TIDEWATER_TRIGGER`, `TIDEWATER_TOPIC`,
/// `TIDEWATER_PARTITION`, `TIDEWATER_OFFSET`, `TIDEWATER_KEY` (if UTF-8), `TIDEWATER_EVENT_ID`,
/// `TIDEWATER_TIMESTAMP_MS`, `TIDEWATER_ATTEMPT` and `TIDEWATER_BATCH_SIZE`.
#[derive(Debug)]
pub struct Command {
    trigger: String,
    program: String,
    args: Vec<String>,
    timeout: Duration,
    batched: bool,
}

impl Command {
    async fn attempt(&self, events: &[Event], attempt: u32) -> Attempt {
        let Some(first) = events.first() else { return Attempt::Acknowledged };
        let input: Bytes = if self.batched {
            let mut lines = Vec::new();
            for event in events {
                let line = serde_json::to_vec(&from_event(event).to_json()).unwrap_or_default();
                lines.extend_from_slice(&line);
                lines.push(b'\n');
            }
            Bytes::from(lines)
        } else {
            first.value.clone().unwrap_or_default()
        };
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env("TIDEWATER_TRIGGER", &self.trigger)
            .env("TIDEWATER_TOPIC", first.topic.as_ref())
            .env("TIDEWATER_PARTITION", first.partition.to_string())
            .env("TIDEWATER_OFFSET", first.offset.to_string())
            .env("TIDEWATER_EVENT_ID", first.id())
            .env("TIDEWATER_ATTEMPT", attempt.to_string())
            .env("TIDEWATER_BATCH_SIZE", events.len().to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(key) = first.key_str() {
            command.env("TIDEWATER_KEY", key);
        }
        if let Some(timestamp) = first.timestamp_ms {
            command.env("TIDEWATER_TIMESTAMP_MS", timestamp.to_string());
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                return Attempt::Retry {
                    reason: format!("starting {:?}: {error}", self.program),
                    retry_after: None,
                }
            }
        };
        // Written from its own task: a program that writes a lot of stderr before reading stdin
        // would otherwise deadlock against us.
        if let Some(mut stdin) = child.stdin.take() {
            tokio::spawn(async move {
                // A program that exits without reading its input is not an error.
                let _ = stdin.write_all(&input).await;
            });
        }
        // Only the start of stderr is kept (for the reason text); the rest is read and thrown
        // away, so a chatty program neither blocks on a full pipe nor fills our memory.
        let stderr_reader = child.stderr.take().map(|stderr| tokio::spawn(read_excerpt(stderr)));
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => {
                return Attempt::Retry {
                    reason: format!("waiting for {:?}: {error}", self.program),
                    retry_after: None,
                }
            }
            // Returning drops the child, which kill_on_drop kills.
            Err(_) => {
                return Attempt::Retry {
                    reason: format!(
                        "{:?} did not finish within {} ms and was killed",
                        self.program,
                        self.timeout.as_millis()
                    ),
                    retry_after: None,
                }
            }
        };
        if status.success() {
            return Attempt::Acknowledged;
        }
        let stderr = match stderr_reader {
            Some(reader) => reader.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
        let detail = if stderr.is_empty() { String::new() } else { format!(": {stderr}") };
        let reason = format!("{:?} exited with {}{detail}", self.program, status);
        if status.code() == Some(EXIT_DATA_ERROR) {
            Attempt::Reject { reason }
        } else {
            Attempt::Retry { reason, retry_after: None }
        }
    }
}

/// The first `REASON_DETAIL_BYTES_MAX` bytes of `stream`, reading (and discarding) the rest until
/// it ends.
async fn read_excerpt(mut stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut excerpt = Vec::with_capacity(REASON_DETAIL_BYTES_MAX);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return excerpt,
            Ok(read) => {
                let room = REASON_DETAIL_BYTES_MAX - excerpt.len();
                excerpt.extend_from_slice(&chunk[..read.min(room)]);
            }
        }
    }
}

/// Sends each event to a device: a record keyed by the device id on the commands topic.
pub struct DeviceCommand {
    trigger: String,
    producer: FutureProducer<QuietContext>,
    topic: String,
    source: DeviceSource,
}

impl std::fmt::Debug for DeviceCommand {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DeviceCommand")
            .field("topic", &self.topic)
            .field("source", &self.source)
            .finish()
    }
}

impl DeviceCommand {
    fn device_id(&self, event: &Event) -> Option<String> {
        match &self.source {
            DeviceSource::Key => event.key_str().map(str::to_string),
            DeviceSource::Header(name) => {
                event.header(name).and_then(|bytes| std::str::from_utf8(bytes).ok()).map(str::to_string)
            }
            DeviceSource::Field(path) => {
                let value: serde_json::Value = serde_json::from_slice(event.value.as_deref()?).ok()?;
                let mut current = &value;
                for step in path {
                    current = current.get(step.as_str())?;
                }
                match current {
                    serde_json::Value::String(text) => Some(text.clone()),
                    serde_json::Value::Number(number) => Some(number.to_string()),
                    _ => None,
                }
            }
        }
        .filter(|device| !device.is_empty())
    }

    async fn attempt(&self, events: &[Event]) -> Attempt {
        let mut sends = Vec::with_capacity(events.len());
        for event in events {
            let Some(device) = self.device_id(event) else {
                return Attempt::Reject {
                    reason: format!("event {} names no device ({:?})", event.id(), self.source),
                };
            };
            let source_id = event.id();
            let headers = event
                .owned_headers()
                .insert(Header { key: "tidewater-trigger", value: Some(self.trigger.as_bytes()) })
                .insert(Header { key: "tidewater-source-event", value: Some(source_id.as_bytes()) });
            let mut record = FutureRecord::to(&self.topic).key(device.as_bytes()).headers(headers);
            if let Some(value) = event.value.as_deref() {
                record = record.payload(value);
            }
            sends.push(self.producer.send_result(record).map_err(|(error, _)| error));
        }
        for send in sends {
            let result = match send {
                Ok(delivery) => delivery.await,
                Err(error) => {
                    return Attempt::Retry {
                        reason: format!("queueing the command: {error}"),
                        retry_after: None,
                    }
                }
            };
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    return Attempt::Retry {
                        reason: format!("sending the command to {}: {error}", self.topic),
                        retry_after: None,
                    }
                }
                Err(_) => {
                    return Attempt::Retry { reason: "the producer shut down".to_string(), retry_after: None }
                }
            }
        }
        Attempt::Acknowledged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(script: &str) -> Command {
        Command {
            trigger: "t".to_string(),
            program: "sh".to_string(),
            args: vec!["-c".to_string(), script.to_string()],
            timeout: Duration::from_secs(30),
            batched: false,
        }
    }

    #[tokio::test]
    async fn a_chatty_command_keeps_only_the_start_of_its_stderr() {
        // 8 MiB of stderr, then a data error: the reason holds a bounded excerpt.
        let chatty = command("yes stderr | head -c 8388608 >&2; exit 65");
        let event = Event::for_test(0, 1, Some("k"), "v");
        match chatty.attempt(&[event], 1).await {
            Attempt::Reject { reason } => {
                assert!(reason.contains("exited with"), "{reason}");
                assert!(reason.len() < REASON_DETAIL_BYTES_MAX + 100, "reason is {} bytes", reason.len());
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn exit_codes_decide_the_outcome() {
        let event = Event::for_test(0, 1, Some("k"), "hello");
        assert_eq!(
            command("[ \"$(cat)\" = hello ]").attempt(std::slice::from_ref(&event), 1).await,
            Attempt::Acknowledged
        );
        assert!(matches!(command("echo oops >&2; exit 3").attempt(&[event], 1).await,
            Attempt::Retry { reason, .. } if reason.contains("oops")));
    }
}
