//! `tidewater bench mqtt load | idle | handshakes`: a fleet of simulated devices against any MQTT server, so
//! the Tidewater gateway and Mosquitto are measured by the same client under the same load
//! (`scripts/bench-mqtt` runs both side by side).
//!
//! Every simulated device is one TCP connection speaking MQTT 3.1.1 (what device SDKs speak)
//! through the `tidewater-mqtt` codec, over TLS with `--tls-ca` (a rustls client trusting that
//! CA, checking the server's certificate for --mqtt's IP), with its own client id (`{prefix}-{index}`), user name
//! (the same) and password (a fresh random key). With `--gateway` the target is a Tidewater
//! gateway: the devices are first registered in its cluster's `_tidewater_devices` topic in one
//! bulk write ([`DeviceRegistry::put_many`]), and the command waits until the gateway accepts
//! the last of them (it follows the topic, so this takes a poll interval or two). Other servers
//! (Mosquitto with `allow_anonymous true`) take the same CONNECT as it is.
//!
//! - `load`: every device publishes QoS 1 telemetry (a JSON object of `--payload-bytes`) to
//!   `devices/{id}/messages/events/`, keeping `--in-flight` PUBLISHes unacknowledged: each
//!   PUBACK frees a slot that is refilled at once. After `--warmup-secs`, `--runs` windows of
//!   `--duration-secs` each count the PUBACKs that arrive in them and the latency of each, from
//!   just before its PUBLISH was written to when the read that brought its PUBACK returned.
//!   Then no more is sent, every outstanding PUBLISH must be acknowledged, and the sessions end
//!   with DISCONNECT. With `--gateway`, the telemetry topic's end offsets (summed over its
//!   partitions) are read before and after: they must have grown by at least the number of
//!   PUBACKs received, or the command fails. Under `tidewater serve`'s default `fsync = always`
//!   the end offset (the high watermark) is the durable offset, so this checks that every
//!   acknowledged message is on disk.
//! - `idle`: reads the server's resident memory (VmRSS, from `/proc/{pid}/status`; the server
//!   must run on this machine), opens `--connections` sessions that then stay silent (a long
//!   keep-alive), waits `--settle-secs`, reads it again and reports the difference per
//!   connection. Kernel socket buffers are not in VmRSS, for any server. Afterwards every session
//!   must still answer a PINGREQ, so the figure is for live sessions.
//! - `handshakes`: new sessions per second. `--concurrency` workers each open a connection
//!   (TCP, the TLS handshake with `--tls-ca`, CONNECT, CONNACK), send DISCONNECT, close it and
//!   start again with the next device of the fleet, for `--runs` windows of `--duration-secs`;
//!   reported are completed sessions per second, the latency from the TCP connect to the
//!   CONNACK, and the CPU time each costs the server and this process. Every TLS handshake is a
//!   full one: the client keeps no sessions to resume, as a fleet of devices that each connect
//!   once would not have any.
//!
//! Both ends of every connection are on this machine, so each connection costs a file
//! descriptor here and one in the server; the command checks its own limit (`ulimit -n`) before
//! it starts. One local address reaches one server port from at most the ephemeral port range
//! (`net.ipv4.ip_local_port_range`, 28,232 ports by default), so when more connections than that
//! are open at once to a loopback server, they are spread over the local addresses 127.0.0.1,
//! 127.0.0.2, ... (all of 127.0.0.0/8 is this machine's). Rates are PUBACKs per second of wall time; latencies come from a histogram whose
//! buckets are at most 1/32 (about 3%) of their value wide, reported at their upper edge.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use clap::{Args, Subcommand};
use rdkafka::consumer::Consumer;
use rustls::pki_types::ServerName;
use tidewater_client::ClusterArgs;
use tidewater_gateway::device::{generate_key, generate_salt, validate_device_id};
use tidewater_gateway::{Device, DeviceRegistry};
use tidewater_mqtt::{
    check, decode, Connect, Disconnect, Limits, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, Utf8Bytes,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::measure::{self, middle_index, LatencyHistogram, MachineTicks, USER_HZ};
use crate::Summary;
use tidewater_cli::Connection;

/// The most connections one command opens. Beyond the ephemeral port range they come from
/// several local addresses, which a loopback server allows (see [`Dialer`]).
const CONNECTIONS_MAX: i64 = 200_000;
/// The ephemeral port range's size when `/proc/sys/net/ipv4/ip_local_port_range` cannot be read
/// (Linux's default, 32768-60999).
const EPHEMERAL_PORTS_DEFAULT: u32 = 28_232;
/// Ephemeral ports of each local address left to other sockets (the Kafka clients, connections
/// still closing) when connections are spread over several.
const EPHEMERAL_PORTS_SPARE: u32 = 2_000;
/// The most handshakes `handshakes` keeps in progress at once.
const CONCURRENCY_MAX: i64 = 1024;
/// File descriptors this process needs besides its connections (runtime, Kafka clients).
const FD_MARGIN: u64 = 64;
/// The most unacknowledged PUBLISHes per connection (Tidewater's default Receive Maximum is 64).
const IN_FLIGHT_MAX: i64 = 1024;
/// The smallest and largest telemetry payload; the JSON fields take about 170 bytes.
const PAYLOAD_BYTES_MIN: i64 = 64;
const PAYLOAD_BYTES_MAX: i64 = 256 * 1024;
/// Connection handshakes (TCP, CONNECT, CONNACK) in progress at once: enough to open 10,000 in
/// seconds, few enough that a listen backlog (Mosquitto's is 100) does not overflow.
const CONNECTS_IN_FLIGHT: usize = 64;
/// Attempts per connection before the command gives up on it, and the wait between them.
const CONNECT_ATTEMPTS: u32 = 5;
const CONNECT_RETRY: Duration = Duration::from_millis(200);
/// How long a server may take to complete a TLS handshake, or answer a CONNECT or a PINGREQ.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection waits for a PUBACK while PUBLISHes are outstanding before the run
/// fails (the gateway's own producer gives up after 30 s).
const ACK_TIMEOUT: Duration = Duration::from_secs(40);
/// How long the outstanding PUBLISHes may take to be acknowledged once sending stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(45);
/// How often the gateway is asked again whether it accepts the registered devices yet.
const REGISTRY_POLL: Duration = Duration::from_millis(100);
/// Keep-alive of the loading sessions; they are never silent that long.
const LOAD_KEEP_ALIVE_SECS: u16 = 60;
/// The bytes a connection's read buffer starts with (PUBACKs are 4 bytes each).
const READ_BUFFER_BYTES: usize = 4096;

#[derive(Debug, Subcommand)]
pub enum MqttBenchCommand {
    /// QoS 1 publish rate and PUBACK latency of a fleet of devices (default 1,000), each with
    /// a bounded number of unacknowledged PUBLISHes; with --gateway, also checks that every
    /// acknowledged message reached the telemetry topic.
    Load(LoadArgs),
    /// Resident memory per idle MQTT connection of a server on this machine (by --pid).
    Idle(IdleArgs),
    /// New sessions per second (TCP, with --tls-ca a full TLS handshake, CONNECT, CONNACK,
    /// DISCONNECT), the latency of each, and the CPU time each costs the server and the client.
    Handshakes(HandshakeArgs),
}

/// What `load` and `idle` share: where the server is and who the devices are.
#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    /// The MQTT server, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub(crate) mqtt: SocketAddr,
    /// Connect over TLS, trusting the CA certificates in this PEM file; the server's certificate
    /// must name --mqtt's IP address. No TLS session is resumed: every handshake is a full one.
    #[arg(long)]
    pub(crate) tls_ca: Option<PathBuf>,
    /// The server is a Tidewater gateway whose Kafka-compatible cluster is at --brokers:
    /// register the devices there first (and for `load`, check the telemetry topic afterwards).
    #[arg(long)]
    pub(crate) gateway: bool,
    /// Simulated devices, one connection each (`handshakes`: the fleet its workers go through,
    /// one device after another).
    #[arg(long, short = 'n', default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=CONNECTIONS_MAX))]
    pub(crate) connections: u32,
    /// Device ids (client ids) are PREFIX-00000, PREFIX-00001, ...; by default bench-{unix ms},
    /// so each command registers devices of its own.
    #[arg(long)]
    pub(crate) device_prefix: Option<String>,
    /// Print the final figures as name=value lines, for scripts.
    #[arg(long)]
    pub(crate) kv: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Unacknowledged QoS 1 PUBLISHes per connection. 4 by default: a device SDK keeps a small
    /// window so one round trip does not stall it, and 1,000 devices x 4 is 4,000 messages in
    /// flight, plenty for a server to batch, yet within Tidewater's Receive Maximum (64) and
    /// small enough that latency is the server's, not a queue the client built.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=IN_FLIGHT_MAX))]
    pub(crate) in_flight: u16,
    /// Bytes of each message's JSON payload.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(PAYLOAD_BYTES_MIN..=PAYLOAD_BYTES_MAX))]
    pub(crate) payload_bytes: u32,
    /// Seconds of publishing before the first measured window.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup_secs: f64,
    /// Seconds of each measured window.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) duration_secs: f64,
    /// Measured windows, back to back; the figures are their medians.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// With --gateway: the topic the gateway appends device events to.
    #[arg(long, default_value = "telemetry")]
    pub(crate) telemetry_topic: String,
    /// The server's process id, if it runs on this machine: its CPU time per message is
    /// reported beside this process's and the rest of the machine's.
    #[arg(long)]
    pub(crate) pid: Option<u32>,
}

#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// The server's process id, whose VmRSS is read before and after.
    #[arg(long)]
    pub(crate) pid: u32,
    /// Seconds to wait before each reading, for the server to finish what it was doing.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) settle_secs: f64,
    /// Keep-alive the idle sessions ask for; the server closes a session silent for 1.5 times
    /// this, so it must outlast the measurement.
    #[arg(long, default_value_t = 3600)]
    pub(crate) keep_alive_secs: u16,
}

#[derive(Debug, Args)]
pub struct HandshakeArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Sessions being opened at once, each by a worker that opens the next as soon as its last
    /// one is closed. Keep it below the server's listen backlog (Mosquitto's is 100): an
    /// overflowing backlog drops connection attempts, which the kernel retries a second later.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=CONCURRENCY_MAX))]
    pub(crate) concurrency: u32,
    /// Seconds of each measured window.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) duration_secs: f64,
    /// Measured windows, one after the other; the figures are their medians.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// The server's process id, if it runs on this machine: its CPU time per session is reported
    /// beside this process's.
    #[arg(long)]
    pub(crate) pid: Option<u32>,
}

pub(crate) fn run(command: MqttBenchCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-bench-mqtt")
        .build()
        .context("starting the async runtime")?;
    match command {
        MqttBenchCommand::Load(args) => runtime.block_on(load(args)),
        MqttBenchCommand::Idle(args) => runtime.block_on(idle(args)),
        MqttBenchCommand::Handshakes(args) => runtime.block_on(handshakes(args)),
    }
}

// --- devices -------------------------------------------------------------------------------------

/// One simulated device: its client id and the key it presents as its password.
#[derive(Debug, Clone)]
struct SimulatedDevice {
    id: String,
    key: String,
}

/// The fleet of `target`: ids from the prefix, a fresh key each. With `--gateway` they are
/// registered and the gateway is waited for until it accepts the last one. `open_at_once` is
/// the most connections the command will hold at the same time (for the file descriptor check).
async fn fleet(
    target: &TargetArgs,
    dialer: &Dialer,
    open_at_once: u32,
) -> anyhow::Result<Arc<Vec<SimulatedDevice>>> {
    check_fd_limit(u64::from(open_at_once))?;
    let prefix = match &target.device_prefix {
        Some(prefix) => prefix.clone(),
        None => format!("bench-{}", unix_ms()),
    };
    let devices = (0..target.connections)
        .map(|index| {
            let id = format!("{prefix}-{index:05}");
            if target.gateway {
                validate_device_id(&id).map_err(|error| anyhow::anyhow!("device {id:?}: {error}"))?;
            }
            let key = generate_key().context("reading random bytes for a device key")?;
            Ok(SimulatedDevice { id, key })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if target.gateway {
        register(target, dialer, &devices).await?;
    }
    Ok(Arc::new(devices))
}

/// Writes every device to the gateway's registry in one bulk write, then waits until the
/// gateway accepts the last one written (it applies the registry in order, so then all).
async fn register(target: &TargetArgs, dialer: &Dialer, devices: &[SimulatedDevice]) -> anyhow::Result<()> {
    let started = Instant::now();
    let registry = DeviceRegistry::new(target.connect.cluster_config()?, target.connect.timeout());
    registry.ensure_topic().await?;
    let now_ms = unix_ms();
    let records = devices
        .iter()
        .map(|device| {
            let salt = generate_salt().context("reading random bytes for a salt")?;
            Ok(Device::new(&device.id, &device.key, salt, now_ms as i64))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    registry.put_many(&records).await.context("registering the simulated devices")?;
    let written = started.elapsed();
    let Some(last) = devices.last() else { return Ok(()) };
    let deadline = Instant::now() + target.connect.timeout();
    loop {
        match connect(dialer, devices.len() - 1, last, LOAD_KEEP_ALIVE_SECS).await {
            Ok(session) => {
                session.disconnect().await;
                break;
            }
            // Not read yet (Server unavailable before the first read of the registry, Bad user
            // name or password until the device's record is applied): ask again.
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "the gateway does not accept the devices yet");
                tokio::time::sleep(REGISTRY_POLL).await;
            }
            Err(error) => {
                anyhow::bail!(
                    "the gateway at {} did not accept registered device {} within {:?}: {error}",
                    target.mqtt,
                    last.id,
                    target.connect.timeout()
                )
            }
        }
    }
    eprintln!(
        "registered {} devices in {:.1} s; the gateway accepted them {:.1} s later",
        devices.len(),
        written.as_secs_f64(),
        (started.elapsed() - written).as_secs_f64()
    );
    Ok(())
}

/// Fails early, with the fix named, when this process may not open `connections` sockets.
fn check_fd_limit(connections: u64) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let Some((soft, hard)) = open_files_limits(&limits) else { return Ok(()) };
    let needed = connections + FD_MARGIN;
    anyhow::ensure!(
        needed <= soft,
        "{connections} connections need about {needed} file descriptors and this process may open \
         {soft} (ulimit -n; the hard limit is {hard}: run `ulimit -n {hard}` first)"
    );
    Ok(())
}

/// The soft and hard "Max open files" of a `/proc/PID/limits` text (`u64::MAX` for unlimited).
fn open_files_limits(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    let mut fields = line.trim_start_matches("Max open files").split_whitespace();
    let mut parse = || match fields.next()? {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    };
    Some((parse()?, parse()?))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

// --- reaching the server ------------------------------------------------------------------------

/// A connection's byte stream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How this command reaches the server: its address, TLS if asked, and the local addresses the
/// connections come from.
#[derive(Clone)]
struct Dialer {
    address: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Connection `index` comes from `sources[index % len]`; none: the kernel chooses, as for
    /// any client.
    sources: Arc<Vec<IpAddr>>,
}

impl Dialer {
    /// `open_at_once`: the most connections the command holds at the same time.
    fn new(target: &TargetArgs, open_at_once: u32) -> anyhow::Result<Dialer> {
        let tls = target.tls_ca.as_deref().map(tls_connector).transpose()?;
        let ports_per_address = ephemeral_ports().saturating_sub(EPHEMERAL_PORTS_SPARE).max(1);
        let sources = source_addresses(target.mqtt, open_at_once, ports_per_address)?;
        if !sources.is_empty() {
            eprintln!(
                "{open_at_once} connections at once: from {} local addresses, {} to {}",
                sources.len(),
                sources[0],
                sources[sources.len() - 1]
            );
        }
        Ok(Dialer { address: target.mqtt, tls, sources: Arc::new(sources) })
    }

    /// Opens connection number `index`: TCP, then the TLS handshake if asked.
    async fn open(&self, index: usize) -> anyhow::Result<Box<dyn Io>> {
        let address = self.address;
        let socket = if address.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .context("creating a socket")?;
        if !self.sources.is_empty() {
            let source = self.sources[index % self.sources.len()];
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("binding a socket to {source}"))?;
        }
        let stream = socket.connect(address).await.with_context(|| format!("connecting to {address}"))?;
        // PUBLISHes and acknowledgements are small and latency is measured: no Nagle delay.
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let Some(tls) = &self.tls else { return Ok(Box::new(stream)) };
        let handshake = tls.connect(ServerName::IpAddress(address.ip().into()), stream);
        let stream = tokio::time::timeout(ANSWER_TIMEOUT, handshake)
            .await
            .map_err(|_| anyhow::anyhow!("no TLS handshake within {ANSWER_TIMEOUT:?}"))?
            .with_context(|| format!("the TLS handshake with {address}"))?;
        Ok(Box::new(stream))
    }
}

/// The TLS client of every connection: trusts the CAs of `ca` and keeps no sessions to resume,
/// so every handshake is a full one, as for a fleet of devices that each connect once.
fn tls_connector(ca: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut config = crate::connect::tls_client_config(ca)?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The local addresses connections to `server` come from: none (the kernel chooses) while
/// `open_at_once` connections fit in one address's `ports_per_address` ephemeral ports; else as
/// many of 127.0.0.1, 127.0.0.2, ... as they need, which only a server on 127.0.0.0/8 accepts.
fn source_addresses(
    server: SocketAddr,
    open_at_once: u32,
    ports_per_address: u32,
) -> anyhow::Result<Vec<IpAddr>> {
    if open_at_once <= ports_per_address {
        return Ok(Vec::new());
    }
    let needed = open_at_once.div_ceil(ports_per_address.max(1));
    anyhow::ensure!(
        matches!(server.ip(), IpAddr::V4(ip) if ip.is_loopback()) && needed < 1 << 24,
        "{open_at_once} connections to {server} at once need {needed} local addresses (each has \
         {ports_per_address} ephemeral ports to spare); only a server on 127.0.0.0/8 can be reached \
         from several here"
    );
    let first = u32::from(Ipv4Addr::LOCALHOST);
    Ok((0..needed).map(|offset| IpAddr::V4(Ipv4Addr::from(first + offset))).collect())
}

/// The size of this machine's ephemeral port range (`net.ipv4.ip_local_port_range`).
fn ephemeral_ports() -> u32 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    parse_port_range(&range).unwrap_or(EPHEMERAL_PORTS_DEFAULT)
}

/// The number of ports in an `ip_local_port_range` text ("32768\t60999").
fn parse_port_range(range: &str) -> Option<u32> {
    let mut bounds = range.split_whitespace().map(|bound| bound.parse::<u32>().ok());
    let (low, high) = (bounds.next()??, bounds.next()??);
    (high >= low).then(|| high - low + 1)
}

// --- one connection ------------------------------------------------------------------------------

/// A connected MQTT 3.1.1 session: the stream and what has been read past the last packet.
struct Session {
    stream: Box<dyn Io>,
    buffer: BytesMut,
}

const VERSION: ProtocolVersion = ProtocolVersion::V311;

/// Opens a session for `device` as connection number `index`: TCP (and TLS), CONNECT (clean
/// session, user name = client id, password = key), and a CONNACK that accepts it.
async fn connect(
    dialer: &Dialer,
    index: usize,
    device: &SimulatedDevice,
    keep_alive_secs: u16,
) -> anyhow::Result<Session> {
    let stream = dialer.open(index).await?;
    let client_id = Utf8Bytes::try_from_bytes(Bytes::from(device.id.clone())).context("client id")?;
    let packet = Packet::Connect(Box::new(Connect {
        protocol_version: VERSION,
        clean_start: true,
        keep_alive_secs,
        client_id: client_id.clone(),
        will: None,
        username: Some(client_id),
        password: Some(Bytes::from(device.key.clone())),
        properties: Properties::default(),
    }));
    let mut session = Session { stream, buffer: BytesMut::with_capacity(READ_BUFFER_BYTES) };
    session.write(&packet).await?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, session.read_packet())
        .await
        .map_err(|_| anyhow::anyhow!("no CONNACK within {ANSWER_TIMEOUT:?}"))??;
    match answer {
        Packet::ConnAck(connack) if connack.reason_code == ReasonCode::Success => Ok(session),
        Packet::ConnAck(connack) => {
            anyhow::bail!("the server refused {}: {}", device.id, connack.reason_code)
        }
        other => anyhow::bail!("the server answered CONNECT with {}", other.packet_type().name()),
    }
}

impl Session {
    async fn write(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        packet.encode(VERSION, &mut out).context("encoding a packet")?;
        self.stream.write_all(&out).await.context("writing to the server")
    }

    /// The next whole packet, reading as needed.
    async fn read_packet(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(packet) = self.buffered_packet()? {
                return Ok(packet);
            }
            self.read_more().await?;
        }
    }

    /// A packet already in the buffer, if a whole one is there.
    fn buffered_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        let limits = Limits::default();
        let Some(len) = check(&self.buffer, limits.max_packet_bytes).context("a packet from the server")?
        else {
            return Ok(None);
        };
        let frame = self.buffer.split_to(len).freeze();
        decode(frame, VERSION, &limits).map(Some).context("a packet from the server")
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        if self.stream.read_buf(&mut self.buffer).await.context("reading from the server")? == 0 {
            anyhow::bail!("the server closed the connection");
        }
        Ok(())
    }

    /// Ends the session the polite way; errors do not matter any more.
    async fn disconnect(mut self) {
        let goodbye = Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        });
        let _ = self.write(&goodbye).await;
        let _ = self.stream.shutdown().await;
    }
}

/// Opens a session for every device, [`CONNECTS_IN_FLIGHT`] handshakes at a time, each tried up
/// to [`CONNECT_ATTEMPTS`] times (a full listen backlog resets connections). Returns them in
/// device order, or the first failure.
async fn connect_all(
    dialer: &Dialer,
    devices: &Arc<Vec<SimulatedDevice>>,
    keep_alive_secs: u16,
) -> anyhow::Result<Vec<Session>> {
    let started = Instant::now();
    let handshakes = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for index in 0..devices.len() {
        let devices = devices.clone();
        let handshakes = handshakes.clone();
        let dialer = dialer.clone();
        tasks.spawn(async move {
            let _permit = handshakes.acquire_owned().await?;
            let device = &devices[index];
            let mut attempt = 1;
            loop {
                match connect(&dialer, index, device, keep_alive_secs).await {
                    Ok(session) => return Ok((index, session)),
                    Err(error) if attempt < CONNECT_ATTEMPTS => {
                        tracing::debug!(%error, attempt, "connecting {}; trying again", device.id);
                        attempt += 1;
                        tokio::time::sleep(CONNECT_RETRY).await;
                    }
                    Err(error) => return Err(error.context(format!("device {}", device.id))),
                }
            }
        });
    }
    let mut sessions: Vec<Option<Session>> = (0..devices.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, session) = joined.context("a connecting task failed")??;
        sessions[index] = Some(session);
    }
    eprintln!("connected {} sessions in {:.1} s", devices.len(), started.elapsed().as_secs_f64());
    Ok(sessions.into_iter().flatten().collect())
}

// --- load ----------------------------------------------------------------------------------------

/// What the controller and every publishing connection share.
#[derive(Debug)]
struct LoadState {
    /// 0 while warming up, `i` during measured window `i` (1-based), past `windows.len()` once
    /// sending has stopped.
    phase: AtomicUsize,
    windows: Vec<Window>,
    sent: AtomicU64,
    acked: AtomicU64,
    /// The first connection failure, which fails the command.
    failure: Mutex<Option<String>>,
}

/// One measured window's PUBACKs.
#[derive(Debug, Default)]
struct Window {
    acked: AtomicU64,
    latency: LatencyHistogram,
}

impl LoadState {
    fn stopping(&self) -> bool {
        self.phase.load(Ordering::Relaxed) > self.windows.len()
    }

    fn record_ack(&self, latency: Duration) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        let phase = self.phase.load(Ordering::Relaxed);
        if let Some(window) = phase.checked_sub(1).and_then(|idx| self.windows.get(idx)) {
            window.acked.fetch_add(1, Ordering::Relaxed);
            window.latency.record(latency);
        }
    }

    fn fail(&self, error: &anyhow::Error) {
        let mut failure = self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failure.get_or_insert_with(|| format!("{error:#}"));
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let warmup = super::check_seconds("--warmup-secs", args.warmup_secs, true)?;
    let duration = super::check_seconds("--duration-secs", args.duration_secs, false)?;
    super::check_runs(args.runs)?;
    let target = &args.target;
    let dialer = Dialer::new(target, target.connections)?;
    let devices = fleet(target, &dialer, target.connections).await?;
    let appended_before = if target.gateway {
        Some(telemetry_end_offset(&target.connect, &args.telemetry_topic)?)
    } else {
        None
    };
    let sessions = connect_all(&dialer, &devices, LOAD_KEEP_ALIVE_SECS).await?;

    let state = Arc::new(LoadState {
        phase: AtomicUsize::new(0),
        windows: (0..args.runs).map(|_| Window::default()).collect(),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        failure: Mutex::new(None),
    });
    let mut tasks = JoinSet::new();
    for (session, device) in sessions.into_iter().zip(devices.iter()) {
        let state = state.clone();
        let device_id = device.id.clone();
        let in_flight = usize::from(args.in_flight);
        let payload_bytes = args.payload_bytes as usize;
        tasks.spawn(async move {
            if let Err(error) = publish_loop(session, &device_id, in_flight, payload_bytes, &state).await {
                state.fail(&error.context(format!("device {device_id}")));
            }
        });
    }
    eprintln!(
        "{} devices publishing QoS 1, {} in flight each, {} B payloads: {:?} warm-up, then {} x {:?}",
        devices.len(),
        args.in_flight,
        args.payload_bytes,
        warmup,
        args.runs,
        duration
    );
    tokio::time::sleep(warmup).await;
    let mut elapsed = Vec::with_capacity(args.runs);
    let mut cpu = Vec::with_capacity(args.runs);
    for run_idx in 0..args.runs {
        if let Some(failure) = state.failure() {
            anyhow::bail!("a connection failed: {failure}");
        }
        let cpu_before = CpuSample::take(args.pid)?;
        let started = Instant::now();
        state.phase.store(run_idx + 1, Ordering::Relaxed);
        tokio::time::sleep(duration).await;
        elapsed.push(started.elapsed());
        cpu.push(CpuSample::take(args.pid)?.since(&cpu_before));
    }
    state.phase.store(args.runs + 1, Ordering::Relaxed);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(joined) = tasks.join_next().await {
            joined.context("a publishing task failed")?;
        }
        anyhow::Ok(())
    })
    .await;
    match drained {
        Ok(result) => result?,
        Err(_) => anyhow::bail!("messages still unacknowledged {DRAIN_TIMEOUT:?} after sending stopped"),
    }
    if let Some(failure) = state.failure() {
        anyhow::bail!("a connection failed: {failure}");
    }
    let sent = state.sent.load(Ordering::Relaxed);
    let acked = state.acked.load(Ordering::Relaxed);
    anyhow::ensure!(acked == sent, "{sent} PUBLISHes sent but {acked} acknowledged");

    let mut rates = Vec::with_capacity(args.runs);
    let mut p50s = Vec::with_capacity(args.runs);
    let mut p99s = Vec::with_capacity(args.runs);
    let mut max_micros = 0;
    let (mut server_us, mut client_us, mut shares) = (Vec::new(), Vec::new(), Vec::new());
    for (run_idx, ((window, elapsed), cpu)) in state.windows.iter().zip(&elapsed).zip(&cpu).enumerate() {
        let window_acked = window.acked.load(Ordering::Relaxed);
        let rate = window_acked as f64 / elapsed.as_secs_f64();
        let (p50, p99, max) =
            (window.latency.percentile(50.0), window.latency.percentile(99.0), window.latency.max_micros());
        let per_message = |ticks: u64| ticks as f64 * 1e6 / USER_HZ as f64 / window_acked.max(1) as f64;
        client_us.push(per_message(cpu.own_ticks));
        server_us.extend(cpu.server_ticks.map(per_message));
        let share = cpu.shares();
        eprintln!(
            "run {}: {rate:.0} msgs/s, PUBACK latency p50 {} / p99 {} / max {} ms; CPU per message: \
             server {}, load generator {:.1} us; CPU shares server / load generator / softirq / other: {share}",
            run_idx + 1,
            millis(p50),
            millis(p99),
            millis(Some(max)),
            cpu.server_ticks.map_or("-".to_string(), |ticks| format!("{:.1} us", per_message(ticks))),
            per_message(cpu.own_ticks),
        );
        shares.push(share);
        rates.push(rate);
        p50s.extend(p50.map(|micros| micros as f64));
        p99s.extend(p99.map(|micros| micros as f64));
        max_micros = max_micros.max(max);
    }

    let mut summary = Summary::default();
    summary
        .add("connections", devices.len())
        .add("in_flight", args.in_flight)
        .add("payload_bytes", args.payload_bytes)
        .add("runs", args.runs)
        .add("msgs_per_s", format!("{:.0}", measure::median(&rates).unwrap_or(0.0)))
        .add("p50_ms", millis(measure::median(&p50s).map(|micros| micros as u64)))
        .add("p99_ms", millis(measure::median(&p99s).map(|micros| micros as u64)))
        .add("max_ms", millis(Some(max_micros)))
        .add("acked", acked)
        .add("client_cpu_us_per_msg", format!("{:.1}", measure::median(&client_us).unwrap_or(0.0)));
    if let Some(server_us) = measure::median(&server_us) {
        summary.add("server_cpu_us_per_msg", format!("{server_us:.1}"));
    }
    // The shares of the middle window by rate, to go with the median rate.
    if let Some(middle) = middle_index(&rates) {
        summary.add("cpu_shares", &shares[middle]);
    }
    if let Some(before) = appended_before {
        // Acknowledged means durable: every PUBACK must be matched by a record in the topic by
        // now, with nothing left to wait for.
        let appended = (telemetry_end_offset(&target.connect, &args.telemetry_topic)? - before).max(0) as u64;
        summary.add("appended", appended);
        anyhow::ensure!(
            appended >= acked,
            "{acked} messages were acknowledged but the end offsets of {:?} grew by only {appended}",
            args.telemetry_topic
        );
        eprintln!(
            "all {acked} acknowledged messages are in {:?} (its end offsets grew by {appended})",
            args.telemetry_topic
        );
    }
    print!("{}", summary.render(target.kv));
    Ok(())
}

/// One device's publishing: keeps `in_flight` QoS 1 PUBLISHes unacknowledged until sending
/// stops, then waits for the last PUBACKs and disconnects.
async fn publish_loop(
    mut session: Session,
    device_id: &str,
    in_flight: usize,
    payload_bytes: usize,
    state: &LoadState,
) -> anyhow::Result<()> {
    let topic = Utf8Bytes::try_from_bytes(Bytes::from(format!("devices/{device_id}/messages/events/")))
        .context("the events topic")?;
    // PUBLISHes sent and not yet acknowledged, oldest first, with when each was written.
    let mut outstanding: VecDeque<(PacketId, Instant)> = VecDeque::with_capacity(in_flight);
    let mut packet_id = NonZeroU16::MIN;
    let mut sequence = 0u64;
    let mut out = BytesMut::new();
    let mut payload = String::with_capacity(payload_bytes);
    loop {
        if !state.stopping() {
            // Every PUBLISH that fits in the window goes out in one write.
            let mut n_written = 0;
            while outstanding.len() < in_flight {
                telemetry_payload(&mut payload, device_id, sequence, unix_ms(), payload_bytes);
                let publish = Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: topic.clone(),
                    packet_id: Some(packet_id),
                    properties: Properties::default(),
                    payload: Bytes::copy_from_slice(payload.as_bytes()),
                });
                publish.encode(VERSION, &mut out).context("encoding a PUBLISH")?;
                outstanding.push_back((packet_id, Instant::now()));
                packet_id = packet_id.checked_add(1).unwrap_or(NonZeroU16::MIN);
                sequence += 1;
                n_written += 1;
            }
            if !out.is_empty() {
                session.stream.write_all(&out).await.context("writing to the server")?;
                state.sent.fetch_add(n_written, Ordering::Relaxed);
                out.clear();
            }
        }
        if outstanding.is_empty() {
            break;
        }
        tokio::time::timeout(ACK_TIMEOUT, session.read_more())
            .await
            .map_err(|_| anyhow::anyhow!("no PUBACK within {ACK_TIMEOUT:?}"))??;
        let received = Instant::now();
        while let Some(packet) = session.buffered_packet()? {
            match packet {
                Packet::PubAck(ack) => {
                    let position = outstanding
                        .iter()
                        .position(|(id, _)| *id == ack.packet_id)
                        .with_context(|| format!("a PUBACK for packet id {} never sent", ack.packet_id))?;
                    anyhow::ensure!(
                        ack.reason_code == ReasonCode::Success,
                        "PUBLISH refused: {}",
                        ack.reason_code
                    );
                    let (_, sent_at) = outstanding.remove(position).unwrap_or((ack.packet_id, received));
                    state.record_ack(received.saturating_duration_since(sent_at));
                }
                Packet::PingResp => {}
                other => anyhow::bail!("the server sent {} while publishing", other.packet_type().name()),
            }
        }
    }
    session.disconnect().await;
    Ok(())
}

/// CPU time so far, in `USER_HZ` ticks: the server's (if its pid is known), this process's, and
/// the whole machine's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CpuSample {
    server_ticks: Option<u64>,
    own_ticks: u64,
    machine: MachineTicks,
}

impl CpuSample {
    fn take(server_pid: Option<u32>) -> anyhow::Result<CpuSample> {
        let server_ticks = server_pid.map(|pid| measure::process_ticks(Some(pid))).transpose()?;
        let own_ticks = measure::process_ticks(None)?;
        Ok(CpuSample { server_ticks, own_ticks, machine: MachineTicks::read()? })
    }

    /// The time spent between `earlier` and this sample.
    fn since(&self, earlier: &CpuSample) -> CpuSample {
        CpuSample {
            server_ticks: self
                .server_ticks
                .zip(earlier.server_ticks)
                .map(|(now, then)| now.saturating_sub(then)),
            own_ticks: self.own_ticks.saturating_sub(earlier.own_ticks),
            machine: self.machine.since(&earlier.machine),
        }
    }

    /// "server / load generator / softirq / other %" of all CPUs' time over an interval: with
    /// "other" high, other programs took CPU the figures would otherwise have had.
    fn shares(&self) -> String {
        let machine = &self.machine;
        let total = machine.total.max(1) as f64;
        let server = self.server_ticks.unwrap_or(0);
        let other = machine.busy.saturating_sub(server + self.own_ticks + machine.softirq);
        let percent = |ticks: u64| 100.0 * ticks as f64 / total;
        let server = self.server_ticks.map_or("-".to_string(), |ticks| format!("{:.0}", percent(ticks)));
        format!(
            "{server} / {:.0} / {:.0} / {:.0}%",
            percent(self.own_ticks),
            percent(machine.softirq),
            percent(other)
        )
    }
}

/// Writes into `out` the JSON telemetry message number `sequence` of `device_id`, padded with a
/// `"pad"` field to `payload_bytes` (or a little longer, for a very long id). The readings vary
/// with the sequence number, like a sensor's.
fn telemetry_payload(out: &mut String, device_id: &str, sequence: u64, unix_ms: u64, payload_bytes: usize) {
    out.clear();
    let wobble = (sequence % 97) as f64;
    let _ = write!(
        out,
        r#"{{"deviceId":"{device_id}","seq":{sequence},"ts":{unix_ms},"temperature":{:.2},"humidity":{:.1},"pressure":{:.1},"battery":{},"status":"ok","pad":""#,
        20.0 + wobble / 10.0,
        40.0 + wobble / 5.0,
        1000.0 + wobble,
        100 - sequence % 100,
    );
    // What is left after the closing `"}`.
    let padding = payload_bytes.saturating_sub(out.len() + 2);
    out.extend(std::iter::repeat_n('x', padding));
    out.push_str("\"}");
}

/// The sum of the end offsets (high watermarks) of `topic`'s partitions; 0 for a topic that does
/// not exist yet (the gateway's producer creates it with its first message).
fn telemetry_end_offset(cluster: &ClusterArgs, topic: &str) -> anyhow::Result<i64> {
    let connect = &Connection::new(cluster)?;
    let consumer = connect.assign_only_consumer(&[("group.id", "tidewater-bench-mqtt")])?;
    if !tidewater_cli::topic_names(consumer.client(), connect)?.iter().any(|name| name == topic) {
        return Ok(0);
    }
    let mut total = 0;
    for partition in tidewater_cli::topic_partitions(consumer.client(), connect, topic)? {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition.id, connect.timeout())
            .with_context(|| format!("reading the end offset of {topic}-{}", partition.id))?;
        total += high;
    }
    Ok(total)
}

/// Microseconds as milliseconds with two decimals, or "-" for no value.
fn millis(micros: Option<u64>) -> String {
    match micros {
        Some(micros) => format!("{:.2}", micros as f64 / 1000.0),
        None => "-".to_string(),
    }
}

// --- idle ----------------------------------------------------------------------------------------

async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let settle = super::check_seconds("--settle-secs", args.settle_secs, true)?;
    anyhow::ensure!(args.keep_alive_secs > 0, "--keep-alive-secs must be at least 1 (0 would turn it off)");
    let target = &args.target;
    let dialer = Dialer::new(target, target.connections)?;
    let devices = fleet(target, &dialer, target.connections).await?;
    tokio::time::sleep(settle).await;
    let before_kib = measure::resident_kib(args.pid)?;
    let sessions = connect_all(&dialer, &devices, args.keep_alive_secs).await?;
    tokio::time::sleep(settle).await;
    let after_kib = measure::resident_kib(args.pid)?;
    let n_sessions = sessions.len();
    let per_connection_kib = (after_kib as f64 - before_kib as f64) / n_sessions as f64;
    eprintln!(
        "server pid {}: VmRSS {before_kib} KiB before, {after_kib} KiB with {n_sessions} idle sessions: \
         {per_connection_kib:.1} KiB each",
        args.pid
    );
    // Only live sessions count: each must still answer a PINGREQ.
    let mut tasks = JoinSet::new();
    for mut session in sessions {
        tasks.spawn(async move {
            session.write(&Packet::PingReq).await?;
            match tokio::time::timeout(ANSWER_TIMEOUT, session.read_packet()).await {
                Ok(Ok(Packet::PingResp)) => {}
                Ok(Ok(other)) => anyhow::bail!("PINGREQ answered with {}", other.packet_type().name()),
                Ok(Err(error)) => return Err(error.context("an idle session was closed")),
                Err(_) => anyhow::bail!("no PINGRESP within {ANSWER_TIMEOUT:?}"),
            }
            session.disconnect().await;
            Ok(())
        });
    }
    let mut n_dead = 0;
    let mut first_dead = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined.context("a session task failed").and_then(|result| result) {
            n_dead += 1;
            first_dead.get_or_insert(format!("{error:#}"));
        }
    }
    anyhow::ensure!(
        n_dead == 0,
        "{n_dead} of {n_sessions} idle sessions did not answer a PINGREQ; the first: {}",
        first_dead.unwrap_or_default()
    );
    let mut summary = Summary::default();
    summary
        .add("connections", n_sessions)
        .add("rss_before_kib", before_kib)
        .add("rss_after_kib", after_kib)
        .add("rss_per_connection_kib", format!("{per_connection_kib:.1}"));
    print!("{}", summary.render(target.kv));
    Ok(())
}

// --- handshakes ----------------------------------------------------------------------------------

async fn handshakes(args: HandshakeArgs) -> anyhow::Result<()> {
    let duration = super::check_seconds("--duration-secs", args.duration_secs, false)?;
    super::check_runs(args.runs)?;
    let target = &args.target;
    let dialer = Dialer::new(target, args.concurrency)?;
    let devices = fleet(target, &dialer, args.concurrency).await?;
    eprintln!(
        "{} workers opening and closing sessions{} of {} devices: {} x {:?}",
        args.concurrency,
        if dialer.tls.is_some() { " over TLS (full handshakes)" } else { " over TCP" },
        devices.len(),
        args.runs,
        duration
    );
    // Each session is the next device's, round the fleet.
    let next_device = Arc::new(AtomicUsize::new(0));
    let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    let (mut server_us, mut client_us, mut shares) = (Vec::new(), Vec::new(), Vec::new());
    for run_idx in 0..args.runs {
        let latency = Arc::new(LatencyHistogram::default());
        let cpu_before = CpuSample::take(args.pid)?;
        let started = Instant::now();
        let deadline = started + duration;
        let mut workers = JoinSet::new();
        for _ in 0..args.concurrency {
            let (dialer, devices, next_device, latency) =
                (dialer.clone(), devices.clone(), next_device.clone(), latency.clone());
            workers.spawn(async move {
                let mut completed = 0u64;
                while Instant::now() < deadline {
                    let index = next_device.fetch_add(1, Ordering::Relaxed) % devices.len();
                    let device = &devices[index];
                    let begun = Instant::now();
                    let session = connect(&dialer, index, device, LOAD_KEEP_ALIVE_SECS)
                        .await
                        .with_context(|| format!("device {}", device.id))?;
                    latency.record(begun.elapsed());
                    session.disconnect().await;
                    completed += 1;
                }
                anyhow::Ok(completed)
            });
        }
        let mut completed = 0;
        while let Some(joined) = workers.join_next().await {
            completed += joined.context("a handshake worker failed")??;
        }
        // The window ends when the last worker has closed its last session.
        let elapsed = started.elapsed();
        let cpu = CpuSample::take(args.pid)?.since(&cpu_before);
        let rate = completed as f64 / elapsed.as_secs_f64();
        let per_session = |ticks: u64| ticks as f64 * 1e6 / USER_HZ as f64 / completed.max(1) as f64;
        let (p50, p99) = (latency.percentile(50.0), latency.percentile(99.0));
        let share = cpu.shares();
        eprintln!(
            "run {}: {completed} sessions in {:.2} s, {rate:.0}/s; TCP connect to CONNACK p50 {} / p99 {} ms; \
             CPU per session: server {}, load generator {:.1} us; CPU shares server / load generator / \
             softirq / other: {share}",
            run_idx + 1,
            elapsed.as_secs_f64(),
            millis(p50),
            millis(p99),
            cpu.server_ticks.map_or("-".to_string(), |ticks| format!("{:.1} us", per_session(ticks))),
            per_session(cpu.own_ticks),
        );
        rates.push(rate);
        p50s.extend(p50.map(|micros| micros as f64));
        p99s.extend(p99.map(|micros| micros as f64));
        client_us.push(per_session(cpu.own_ticks));
        server_us.extend(cpu.server_ticks.map(per_session));
        shares.push(share);
    }
    let mut summary = Summary::default();
    summary
        .add("tls", dialer.tls.is_some())
        .add("concurrency", args.concurrency)
        .add("runs", args.runs)
        .add("handshakes_per_s", format!("{:.0}", measure::median(&rates).unwrap_or(0.0)))
        .add("p50_ms", millis(measure::median(&p50s).map(|micros| micros as u64)))
        .add("p99_ms", millis(measure::median(&p99s).map(|micros| micros as u64)))
        .add("client_cpu_us_per_handshake", format!("{:.1}", measure::median(&client_us).unwrap_or(0.0)));
    if let Some(server_us) = measure::median(&server_us) {
        summary.add("server_cpu_us_per_handshake", format!("{server_us:.1}"));
    }
    if let Some(middle) = middle_index(&rates) {
        summary.add("cpu_shares", &shares[middle]);
    }
    print!("{}", summary.render(target.kv));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_payloads_are_json_of_the_asked_size() {
        let mut payload = String::new();
        for (sequence, size) in [(0, 200), (12_345, 200), (7, 1000), (u64::MAX, 64)] {
            telemetry_payload(&mut payload, "bench-1712345678901-00042", sequence, 1_712_345_678_901, size);
            let parsed: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
            assert_eq!(parsed["seq"].as_u64(), Some(sequence), "{payload}");
            assert_eq!(parsed["deviceId"].as_str(), Some("bench-1712345678901-00042"));
            // Exactly the size asked, unless the fields alone are longer (then without padding).
            let padding = parsed["pad"].as_str().map_or(0, str::len);
            assert!(payload.len() == size || (padding == 0 && payload.len() > size), "{size}: {payload}");
        }
        telemetry_payload(&mut payload, "d", 1, 0, 200);
        assert_eq!(payload.len(), 200);
    }

    #[test]
    fn connections_beyond_the_ephemeral_ports_come_from_several_loopback_addresses() {
        let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8883);
        assert_eq!(source_addresses(server, 20_000, 26_232).ok(), Some(vec![]));
        let sources = source_addresses(server, 100_000, 26_232).unwrap_or_default();
        let expected: Vec<IpAddr> = (1..=4).map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))).collect();
        assert_eq!(sources, expected);
        // A server elsewhere sees one address of this machine's.
        let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 8883);
        assert_eq!(source_addresses(remote, 20_000, 26_232).ok(), Some(vec![]));
        let error = source_addresses(remote, 100_000, 26_232).err().map(|error| error.to_string());
        assert!(error.as_ref().is_some_and(|error| error.contains("need 4 local addresses")), "{error:?}");
    }

    #[test]
    fn ephemeral_port_ranges_are_counted_inclusively() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(28_232));
        assert_eq!(parse_port_range("1024 1024"), Some(1));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range(""), None);
    }

    #[test]
    fn open_files_limits_come_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            1024                 20000                files     \n";
        assert_eq!(open_files_limits(limits), Some((1024, 20000)));
        assert_eq!(
            open_files_limits("Max open files  unlimited  unlimited  files"),
            Some((u64::MAX, u64::MAX))
        );
        assert_eq!(open_files_limits("nothing here"), None);
    }
}
