//! The `tidewater` binary: configuration, wiring, subcommands and shutdown. Logic lives in the
//! library crates; this file only turns command lines into calls.

mod admin;
mod capture_cmd;
mod cli;
mod device_cmd;
mod gateway_cmd;
mod gateway_listen;
mod listeners;
mod log_cmd;
mod mqtt_acl_cmd;
mod query_cmd;
mod serve;
mod trigger_cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if ends_when_its_reader_does(&cli.command) {
        end_quietly_on_a_closed_pipe();
    }
    init_tracing(&cli.log_level);
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(*args),
        cli::Command::Log(command) => log_cmd::run(command),
        cli::Command::Topic(args) => tidewater_cli::topic::run(args),
        cli::Command::Produce(args) => tidewater_cli::produce::run(args),
        cli::Command::Consume(args) => tidewater_cli::consume::run(args),
        cli::Command::Bench(command) => tidewater_bench::run(command),
        cli::Command::Group(args) => tidewater_cli::group::run(args),
        cli::Command::User(args) => tidewater_cli::user::run(args),
        cli::Command::Acl(args) => tidewater_cli::acl::run(args),
        cli::Command::Trigger(args) => trigger_cmd::run(args),
        cli::Command::Query(command) => query_cmd::run(command),
        cli::Command::Capture(args) => capture_cmd::run(args),
        cli::Command::Device(args) => device_cmd::run(args),
        cli::Command::MqttAcl(args) => mqtt_acl_cmd::run(args),
        cli::Command::Gateway(args) => gateway_cmd::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `command` prints a report and ends (a listing, a description, `query test`), so that
/// a reader that stops early (`| head`) should end it, as it ends `cat`. Not so for servers and
/// runners, which serve sockets and feed trigger commands' pipes, nor for `produce` and
/// `consume`, which may run for hours: OpenSSL writes to a TLS connection the broker reset would
/// raise SIGPIPE too, where librdkafka reconnects. (`consume` ends quietly on a closed stdout by
/// itself.)
fn ends_when_its_reader_does(command: &cli::Command) -> bool {
    use cli::Command;
    match command {
        Command::Serve(_) | Command::Gateway(_) | Command::Bench(_) => false,
        Command::Produce(_) | Command::Consume(_) => false,
        Command::Trigger(args) => !matches!(args.command, trigger_cmd::TriggerCommand::Run(_)),
        Command::Capture(args) => !matches!(args.command, capture_cmd::CaptureCommand::Run(_)),
        Command::Query(command) => !matches!(command, query_cmd::QueryCommand::Run(_)),
        _ => true,
    }
}

/// Restores the default action of SIGPIPE, ending the process. Rust starts with SIGPIPE
/// ignored, so a write to a closed pipe is an error, and `println!` panics on it with a
/// backtrace: `tidewater query describe JOB | head -3` ended that way.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: `signal` with SIG_DFL only changes this process's disposition of SIGPIPE, before
    // any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Logs go to stderr; `RUST_LOG` overrides `--log-level` with a full filter expression.
fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a person at a terminal; logs piped to a file or a test stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}
