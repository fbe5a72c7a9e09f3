//! `tidewater bench loopback` (hidden): TCP bandwidth over 127.0.0.1 with no Kafka involved, the
//! network ceiling `scripts/bench` puts beside the produce and consume figures.
//!
//! One thread writes `--chunk-bytes` buffers into one connection for `--duration-secs`; another
//! reads them into a buffer of the same size and drops them. That is the least work any
//! single-connection Kafka transfer over loopback does (a broker and a client also parse, copy
//! and store what they move), on the same two kinds of thread, so no such transfer can beat it.
//! The figure is bytes received per second, median of `--runs`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::{Summary, MEGA};

/// The largest write and read buffer.
const CHUNK_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct LoopbackArgs {
    /// Seconds each run sends for.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) duration_secs: f64,
    /// Bytes per write() and per read().
    #[arg(long, default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=CHUNK_BYTES_MAX as u64))]
    pub(crate) chunk_bytes: u64,
    /// Runs; the figure is their median.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Print the final figures as name=value lines, for scripts.
    #[arg(long)]
    pub(crate) kv: bool,
}

pub(crate) fn run(args: LoopbackArgs) -> anyhow::Result<()> {
    let duration = super::check_seconds("--duration-secs", args.duration_secs, false)?;
    super::check_runs(args.runs)?;
    let chunk_bytes = args.chunk_bytes as usize;
    let mut rates = Vec::with_capacity(args.runs);
    for run_idx in 0..args.runs {
        let (bytes, elapsed) = run_once(duration, chunk_bytes)?;
        let rate = bytes as f64 / MEGA / elapsed.as_secs_f64();
        eprintln!(
            "  run {}/{}: {bytes} bytes in {:.2} s: {rate:.0} MB/s",
            run_idx + 1,
            args.runs,
            elapsed.as_secs_f64()
        );
        rates.push(rate);
    }
    let mut summary = Summary::default();
    summary
        .add("chunk_bytes", chunk_bytes)
        .add("runs", args.runs)
        .add("mb_per_s", format!("{:.0}", crate::measure::median(&rates).unwrap_or(0.0)));
    print!("{}", summary.render(args.kv));
    Ok(())
}

/// One connection, one run: the bytes received and the time from the first byte sent to the
/// last one received.
fn run_once(duration: Duration, chunk_bytes: usize) -> anyhow::Result<(u64, Duration)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let address = listener.local_addr().context("reading the listener's address")?;
    let receiver = std::thread::Builder::new()
        .name("loopback-receiver".into())
        .spawn(move || -> std::io::Result<u64> {
            let (mut stream, _) = listener.accept()?;
            let mut buffer = vec![0u8; chunk_bytes];
            let mut received = 0u64;
            loop {
                match stream.read(&mut buffer)? {
                    0 => return Ok(received),
                    read => received += read as u64,
                }
            }
        })
        .context("starting the receiver thread")?;
    let mut stream = TcpStream::connect(address).context("connecting over loopback")?;
    let chunk = super::payload(chunk_bytes);
    let started = Instant::now();
    while started.elapsed() < duration {
        stream.write_all(&chunk).context("writing over loopback")?;
    }
    stream.shutdown(Shutdown::Write).context("closing the loopback connection")?;
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver thread panicked"))?
        .context("reading over loopback")?;
    Ok((received, started.elapsed()))
}
