//! Helpers shared by the end-to-end tests that run the real `tidewater` binary as a child:
//! starting `tidewater serve` on a free loopback port and finding that port in its log, waiting
//! for log lines, and running client commands with a deadline.
//!
//! Every wait here has a deadline, children are killed when a test fails before they exit, and
//! servers bind 127.0.0.1 only. Each test binary uses only some of these, hence the allow.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_tidewater");
/// How long a child may take to reach a line we wait for; generous for a loaded CI machine.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one client command may run before the test kills it and fails.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Kills the child if a test fails before it exits on its own.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tidewater serve` on 127.0.0.1 with a kernel-chosen port and `data_dir`; returns it
/// with a channel of its stderr lines.
pub(crate) fn start_server(data_dir: &Path) -> (ChildGuard, mpsc::Receiver<String>) {
    start_server_with(data_dir, &[])
}

/// [`start_server`] with more `serve` flags. The MQTT and HTTP listeners are off unless
/// `extra_args` asks for them.
pub(crate) fn start_server_with(
    data_dir: &Path,
    extra_args: &[&str],
) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut defaults = Vec::new();
    for listener in ["--mqtt-listen", "--http-listen"] {
        if !extra_args.contains(&listener) {
            defaults.extend([listener, "none"]);
        }
    }
    let mut child = Command::new(BINARY)
        .args(["serve", "--kafka-listen", "127.0.0.1:0"])
        .args(&defaults)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidewater");
    let stderr = child.stderr.take().expect("stderr piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (ChildGuard(child), receiver)
}

/// Collects lines until one contains `needle`; panics with everything seen if it never comes.
pub(crate) fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line containing {needle:?}; saw:\n{}", seen.join("\n"));
}

/// A running `tidewater serve` with a fresh data directory, and the address it listens on.
pub(crate) struct Server {
    pub(crate) child: ChildGuard,
    pub(crate) lines: mpsc::Receiver<String>,
    /// `127.0.0.1:PORT`, from the server's "tidewater is running ... kafka=ADDRESS" line.
    pub(crate) kafka: String,
    /// That line, for the other listeners' addresses (`mqtt=ADDRESS`, `http=ADDRESS`).
    pub(crate) running: String,
    _data_dir: tempfile::TempDir,
}

impl Server {
    pub(crate) fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server started with more `serve` flags, such as `--group-initial-rebalance-delay-ms 0`.
    pub(crate) fn start_with(extra_args: &[&str]) -> Server {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let (child, lines) = start_server_with(data_dir.path(), extra_args);
        let seen = wait_for_line(&lines, "tidewater is running");
        let running = seen.last().expect("the running line");
        let kafka = kafka_address(running).unwrap_or_else(|| panic!("no kafka=ADDRESS in {running:?}"));
        let running = running.clone();
        Server { child, lines, kafka, running, _data_dir: data_dir }
    }
}

/// Runs a client command against `server` and returns its output, whatever its exit status.
pub(crate) fn tidewater(server: &Server, args: &[&str], stdin: &str) -> Output {
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--brokers", &server.kafka, "--timeout-ms", "20000"]);
    run(&full, stdin.as_bytes())
}

/// Runs a client command that must succeed; returns its stdout.
pub(crate) fn ok(server: &Server, args: &[&str], stdin: &str) -> String {
    let output = tidewater(server, args, stdin);
    assert!(
        output.status.success(),
        "tidewater {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// Checks that a client command failed; returns its stderr.
pub(crate) fn fails(output: Output, args: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "tidewater {args:?} succeeded:\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// The `ADDRESS` of a `kafka=ADDRESS` field in a log line.
pub(crate) fn kafka_address(line: &str) -> Option<String> {
    line.split_whitespace().find_map(|field| field.strip_prefix("kafka=")).map(str::to_string)
}

/// A loopback address nothing listens on: a port the kernel handed out and we closed again.
pub(crate) fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    address.to_string()
}

pub(crate) fn send_sigterm(child: &Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory is involved.
    let result = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(result, 0, "kill(SIGTERM) failed");
}

pub(crate) fn wait_exit(guard: &mut ChildGuard) -> ExitStatus {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "tidewater did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `tidewater ARGS` with `stdin` as its input and waits at most [`COMMAND_TIMEOUT`] for it
/// to exit. The child sees none of the developer's `TIDEWATER_*` or `RUST_LOG` settings.
pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(BINARY);
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TIDEWATER_") {
            command.env_remove(&name);
        }
    }
    let mut child = ChildGuard(
        command
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tidewater"),
    );
    // Feeding stdin and draining both pipes on their own threads: a child blocked on a full pipe
    // would otherwise never exit.
    let mut input = child.0.stdin.take().expect("stdin piped");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // A child that exits without reading all of its input is not this helper's business.
        let _ = input.write_all(&stdin);
    });
    let stdout = drain(child.0.stdout.take().expect("stdout piped"));
    let stderr = drain(child.0.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "tidewater {args:?} still running after {COMMAND_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().expect("stdin writer");
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}
