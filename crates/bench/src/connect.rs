//! `tidewater bench connect`: new authenticated Kafka connections per second, the cost of a
//! SASL login (and of a TLS handshake, with `--tls-ca`) as a broker pays it.
//!
//! Each of `--concurrency` workers loops for `--duration-secs`: connect, TLS handshake if asked,
//! SaslHandshake v1, the two SaslAuthenticate round trips of SCRAM (or one of PLAIN), then
//! close. The figure is completed logins per second and the latency of one whole login (p50,
//! p99), median of `--runs`. The client keeps its salted password across logins, as RFC 5802
//! allows (librdkafka does not), so the client's PBKDF2 is paid once and the figure is the
//! broker's; with PLAIN the broker runs the PBKDF2 at every login.
//!
//! It speaks the few Kafka frames it needs itself rather than through librdkafka, which would
//! cost a whole client (threads, metadata) per connection and measure that instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tidewater_security::sasl::{Mechanism, ScramClient};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Summary;

/// The most connections logging in at once.
const CONCURRENCY_MAX: usize = 1024;
/// The largest response frame this client reads (SASL answers are a few hundred bytes).
const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Kafka's API keys and the versions this client speaks.
const SASL_HANDSHAKE: (i16, i16) = (17, 1);
const SASL_AUTHENTICATE: (i16, i16) = (36, 1);

#[derive(Debug, Args)]
pub struct ConnectBenchArgs {
    /// The listener to log in to (a SASL_PLAINTEXT or, with --tls-ca, SASL_SSL one).
    #[arg(long)]
    pub(crate) address: SocketAddr,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, default_value = "SCRAM-SHA-256")]
    pub(crate) mechanism: String,
    #[arg(long)]
    pub(crate) user: String,
    /// The user's password.
    #[arg(long, env = "TIDEWATER_BENCH_PASSWORD", hide_env_values = true)]
    pub(crate) password: String,
    /// Connect over TLS, trusting the CA certificates in this PEM file (the server name checked
    /// is the address's IP).
    #[arg(long)]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Connections logging in at once.
    #[arg(long, default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=CONCURRENCY_MAX as u64))]
    pub(crate) concurrency: u64,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) duration_secs: f64,
    /// Runs; the figures are their medians.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Print the final figures as name=value lines, for scripts.
    #[arg(long)]
    pub(crate) kv: bool,
}

pub(crate) fn run(args: ConnectBenchArgs) -> anyhow::Result<()> {
    let duration = super::check_seconds("--duration-secs", args.duration_secs, false)?;
    super::check_runs(args.runs)?;
    let mechanism: Mechanism = args.mechanism.parse()?;
    let tls = match &args.tls_ca {
        None => None,
        Some(path) => Some(tls_connector(path)?),
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    for run_idx in 0..args.runs {
        let (mut latencies_us, elapsed) =
            runtime.block_on(run_once(&args, mechanism, tls.clone(), duration))?;
        latencies_us.sort_unstable();
        let rate = latencies_us.len() as f64 / elapsed.as_secs_f64();
        let p50 = crate::measure::percentile(&latencies_us, 50.0).unwrap_or(0) as f64 / 1000.0;
        let p99 = crate::measure::percentile(&latencies_us, 99.0).unwrap_or(0) as f64 / 1000.0;
        eprintln!(
            "  run {}/{}: {} logins in {:.2} s: {rate:.0}/s, p50 {p50:.2} ms, p99 {p99:.2} ms",
            run_idx + 1,
            args.runs,
            latencies_us.len(),
            elapsed.as_secs_f64()
        );
        rates.push(rate);
        p50s.push(p50);
        p99s.push(p99);
    }
    let mut summary = Summary::default();
    summary
        .add("mechanism", mechanism)
        .add("tls", tls.is_some())
        .add("concurrency", args.concurrency)
        .add("logins_per_s", format!("{:.0}", crate::measure::median(&rates).unwrap_or(0.0)))
        .add("p50_ms", format!("{:.2}", crate::measure::median(&p50s).unwrap_or(0.0)))
        .add("p99_ms", format!("{:.2}", crate::measure::median(&p99s).unwrap_or(0.0)));
    print!("{}", summary.render(args.kv));
    Ok(())
}

fn tls_connector(ca: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(ca)?)))
}

/// A rustls client (ring, TLS 1.2 and 1.3, no client certificate) trusting the CA certificates
/// of a PEM file; `bench mqtt` starts from it too.
pub(crate) fn tls_client_config(ca: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(certificate.with_context(|| format!("reading {}", ca.display()))?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", ca.display());
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One run: every worker logs in again and again until the deadline. Returns each login's
/// latency in microseconds and the run's length.
async fn run_once(
    args: &ConnectBenchArgs,
    mechanism: Mechanism,
    tls: Option<tokio_rustls::TlsConnector>,
    duration: Duration,
) -> anyhow::Result<(Vec<u64>, Duration)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (address, tls) = (args.address, tls.clone());
        let mut login = Login::new(mechanism, &args.user, args.password.as_bytes());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let begun = Instant::now();
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .with_context(|| format!("connecting to {address}"))?;
                stream.set_nodelay(true)?;
                match &tls {
                    None => login.run(stream).await?,
                    Some(connector) => {
                        let stream = connector
                            .connect(ServerName::IpAddress(address.ip().into()), stream)
                            .await
                            .context("TLS handshake")?;
                        login.run(stream).await?
                    }
                }
                latencies.push(u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(worker) = workers.join_next().await {
        all.extend(worker.context("a login worker failed")??);
    }
    Ok((all, started.elapsed()))
}

/// One worker's login: the mechanism and, for SCRAM, the client that keeps the salted password.
struct Login {
    mechanism: Mechanism,
    user: String,
    password: Vec<u8>,
    scram: Option<ScramClient>,
    correlation_id: i32,
}

impl Login {
    fn new(mechanism: Mechanism, user: &str, password: &[u8]) -> Login {
        let scram = match mechanism {
            Mechanism::Plain => None,
            Mechanism::Scram(scram) => Some(ScramClient::new(scram, user, password)),
        };
        Login { mechanism, user: user.to_string(), password: password.to_vec(), scram, correlation_id: 0 }
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, mut stream: S) -> anyhow::Result<()> {
        let mut body = Vec::new();
        put_string(&mut body, self.mechanism.name());
        let response = self.request(&mut stream, SASL_HANDSHAKE, &body).await?;
        let error_code =
            i16::from_be_bytes(response.get(..2).context("short SaslHandshake response")?.try_into()?);
        anyhow::ensure!(error_code == 0, "SaslHandshake failed with error code {error_code}");
        match self.scram.take() {
            None => {
                let mut message = vec![0u8];
                message.extend_from_slice(self.user.as_bytes());
                message.push(0);
                message.extend_from_slice(&self.password);
                self.authenticate(&mut stream, &message).await?;
            }
            Some(mut client) => {
                let (first, mut exchange) = client.first();
                let server_first = self.authenticate(&mut stream, &first).await?;
                let last = client.last(&mut exchange, &server_first).map_err(anyhow::Error::msg)?;
                let server_final = self.authenticate(&mut stream, &last).await?;
                client.verify(&exchange, &server_final).map_err(anyhow::Error::msg)?;
                self.scram = Some(client);
            }
        }
        stream.shutdown().await.ok();
        Ok(())
    }

    /// One SaslAuthenticate v1 round trip; returns the server's auth bytes.
    async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        message: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::with_capacity(4 + message.len());
        body.extend_from_slice(&i32::try_from(message.len())?.to_be_bytes());
        body.extend_from_slice(message);
        let response = self.request(stream, SASL_AUTHENTICATE, &body).await?;
        // error_code i16, error_message nullable string, auth_bytes (i32 length), lifetime i64.
        let mut cursor = &response[..];
        let error_code = i16::from_be_bytes(take(&mut cursor, 2)?.try_into()?);
        let message_length = i16::from_be_bytes(take(&mut cursor, 2)?.try_into()?);
        let error_message = if message_length >= 0 {
            String::from_utf8_lossy(take(&mut cursor, message_length as usize)?).into_owned()
        } else {
            String::new()
        };
        anyhow::ensure!(
            error_code == 0,
            "SaslAuthenticate failed with error code {error_code}: {error_message}"
        );
        let auth_length = usize::try_from(i32::from_be_bytes(take(&mut cursor, 4)?.try_into()?))?;
        Ok(take(&mut cursor, auth_length)?.to_vec())
    }

    /// Sends a request (header v1: api key, version, correlation id, client id) and returns the
    /// response body after its header (v0: the correlation id).
    async fn request<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        (api_key, version): (i16, i16),
        body: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        self.correlation_id += 1;
        let mut frame = Vec::with_capacity(64 + body.len());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&api_key.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&self.correlation_id.to_be_bytes());
        put_string(&mut frame, "tidewater-bench-connect");
        frame.extend_from_slice(body);
        let size = i32::try_from(frame.len() - 4)?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        stream.write_all(&frame).await?;
        let size = usize::try_from(stream.read_i32().await.context("reading a response")?)?;
        anyhow::ensure!((4..=RESPONSE_BYTES_MAX).contains(&size), "response of {size} bytes");
        let mut response = vec![0u8; size];
        stream.read_exact(&mut response).await?;
        let correlation_id = i32::from_be_bytes(response[..4].try_into()?);
        anyhow::ensure!(
            correlation_id == self.correlation_id,
            "response to request {correlation_id}, expected {}",
            self.correlation_id
        );
        response.drain(..4);
        Ok(response)
    }
}

fn put_string(buffer: &mut Vec<u8>, text: &str) {
    buffer.extend_from_slice(&(text.len() as i16).to_be_bytes());
    buffer.extend_from_slice(text.as_bytes());
}

fn take<'a>(cursor: &mut &'a [u8], length: usize) -> anyhow::Result<&'a [u8]> {
    anyhow::ensure!(cursor.len() >= length, "response cut short");
    let (taken, rest) = cursor.split_at(length);
    *cursor = rest;
    Ok(taken)
}
