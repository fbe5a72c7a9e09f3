//! MQTT over WebSockets (`--mqtt-ws-listen`, wss:// when the listener is TLS): the HTTP/1.1
//! upgrade on path `/mqtt` (IoT Hub's `/$iothub/websocket` is an alias) with subprotocol
//! `mqtt`, then RFC 6455 framing around the same MQTT connection code as plain TCP.
//!
//! The connection code reads and writes a byte stream. Here that stream is one end of an
//! in-memory pipe ([`tokio::io::duplex`]); two pumps sit at the other end: one reads the
//! client's frames (masked, as RFC 6455 requires of clients) and writes their payloads into
//! the pipe, the other reads what the connection writes and sends it as binary frames. MQTT
//! packets may span frames and frames may hold several packets (MQTT 5 section 6), so the
//! payloads are simply concatenated, passed on as they arrive (a frame's announced length is
//! never allocated). Pings are answered; a text frame, an unmasked frame or a frame over
//! [`FRAME_PAYLOAD_BYTES_MAX`] closes the connection with the matching close code.
//! When the MQTT connection ends, the client is sent a close frame.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::connection::run_connection;
use super::{Shared, WRITE_TIMEOUT};
use crate::listener::PeerCertificates;

/// The paths MQTT clients upgrade on: the usual one and IoT Hub's.
pub const WEBSOCKET_PATHS: [&str; 2] = ["/mqtt", "/$iothub/websocket"];
/// The WebSocket subprotocol of MQTT (MQTT 5 section 6, 3.1.1 section 6).
pub const SUBPROTOCOL: &str = "mqtt";
/// Largest frame payload accepted; an MQTT packet may still span several frames.
pub const FRAME_PAYLOAD_BYTES_MAX: u64 = 512 * 1024;
/// Bytes the pipe between the pumps and the MQTT connection holds in each direction.
const PIPE_BYTES: usize = 64 * 1024;
/// Bytes read from the connection before they are sent as one frame.
const OUT_CHUNK_BYTES: usize = 16 * 1024;
/// Bytes of a client's frame read at a time: a frame's payload is passed on as it arrives, so
/// the length a header announces is never allocated up front.
const IN_CHUNK_BYTES: usize = 4096;
/// RFC 6455 section 5.5: control frames carry at most this much.
const CONTROL_PAYLOAD_BYTES_MAX: u64 = 125;
/// RFC 6455 section 1.3.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close codes (RFC 6455 section 7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
const CLOSE_TOO_BIG: u16 = 1009;

/// Serves one HTTP connection that should upgrade to a WebSocket carrying MQTT. `permit` is the
/// listener's connection slot, held until the MQTT connection ends.
pub(super) async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    certificates: Option<PeerCertificates>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let permit = Arc::new(permit);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let (shared, certificates, permit) = (shared.clone(), certificates.clone(), permit.clone());
        async move {
            let response = handshake(&request);
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                tokio::spawn(async move {
                    let _permit = permit;
                    match hyper::upgrade::on(&mut request).await {
                        Ok(upgraded) => {
                            let io = hyper_util::rt::TokioIo::new(upgraded);
                            run_over_websocket(io, peer, certificates, shared).await;
                        }
                        Err(error) => tracing::debug!(%peer, %error, "a WebSocket upgrade did not complete"),
                    }
                });
            }
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(super::CONNECT_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%peer, %error, "an MQTT over WebSocket handshake connection failed");
    }
}

/// The 101 answer to a valid upgrade request, or the refusal (4xx) of an invalid one.
fn handshake(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    match upgrade_answer(request) {
        Ok(response) => response,
        Err(refusal) => *refusal,
    }
}

fn upgrade_answer(request: &Request<Incoming>) -> Result<Response<Full<Bytes>>, Box<Response<Full<Bytes>>>> {
    let refuse = |status: StatusCode, reason: &str| {
        let mut response = Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
        *response.status_mut() = status;
        Box::new(response)
    };
    if !WEBSOCKET_PATHS.contains(&request.uri().path()) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "MQTT over WebSockets is on /mqtt (or /$iothub/websocket)",
        ));
    }
    let header = |name: &str| request.headers().get(name).and_then(|value| value.to_str().ok()).unwrap_or("");
    let is_upgrade = header("upgrade").eq_ignore_ascii_case("websocket")
        && header("connection").split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if request.method() != hyper::Method::GET || !is_upgrade {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (GET, Upgrade: websocket)",
        ));
    }
    if header("sec-websocket-version") != "13" {
        let mut response = refuse(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only");
        response.headers_mut().insert("sec-websocket-version", HeaderValue::from_static("13"));
        return Err(response);
    }
    let key = header("sec-websocket-key");
    if key.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key"));
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
        .collect();
    // A client that offers subprotocols must offer mqtt; one that offers none is taken at its
    // word that it speaks MQTT.
    if !offered.is_empty() && !offered.contains(&SUBPROTOCOL) {
        return Err(refuse(StatusCode::BAD_REQUEST, "the WebSocket subprotocol must be mqtt"));
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = accept_key(key);
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| refuse(StatusCode::BAD_REQUEST, "bad key"))?,
    );
    if !offered.is_empty() {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    Ok(response)
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// What the frame reader asks the frame writer to send.
enum Control {
    Pong(Vec<u8>),
    Close(u16),
}

/// Runs the MQTT connection over an upgraded WebSocket until either side ends it.
async fn run_over_websocket<S>(
    io: S,
    peer: SocketAddr,
    certificates: Option<PeerCertificates>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mqtt_side, pump_side) = tokio::io::duplex(PIPE_BYTES);
    let (socket_read, socket_write) = tokio::io::split(io);
    let (from_mqtt, into_mqtt) = tokio::io::split(pump_side);
    let (control, controls) = mpsc::channel(4);
    let max_payload = FRAME_PAYLOAD_BYTES_MAX;
    let from_client = tokio::spawn(frames_to_bytes(socket_read, into_mqtt, control, max_payload));
    tokio::join!(
        run_connection(mqtt_side, peer, certificates, shared),
        bytes_to_frames(from_mqtt, socket_write, controls),
    );
    // The client's side may still be waiting for a frame that will not come.
    from_client.abort();
}

/// Reads the client's frames and writes their payloads to the MQTT connection, until the
/// client closes or breaks the protocol (then asks for a close frame with the reason).
async fn frames_to_bytes<R, W>(mut socket: R, mut mqtt: W, control: mpsc::Sender<Control>, max_payload: u64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut chunk = vec![0u8; IN_CHUNK_BYTES];
    let outcome: Result<(), u16> = async {
        loop {
            let mut head = [0u8; 2];
            if socket.read_exact(&mut head).await.is_err() {
                return Ok(());
            }
            let (fin, opcode, reserved, masked) =
                (head[0] & 0x80 != 0, head[0] & 0x0f, head[0] & 0x70, head[1] & 0x80 != 0);
            if reserved != 0 || !masked {
                return Err(CLOSE_PROTOCOL_ERROR);
            }
            let length = match head[1] & 0x7f {
                126 => u64::from(socket.read_u16().await.map_err(|_| CLOSE_PROTOCOL_ERROR)?),
                127 => socket.read_u64().await.map_err(|_| CLOSE_PROTOCOL_ERROR)?,
                short => u64::from(short),
            };
            // Decided from the header, before any of the payload is read.
            match opcode {
                0x0 | 0x2 if length > max_payload => return Err(CLOSE_TOO_BIG),
                0x0 | 0x2 => {}
                0x1 => return Err(CLOSE_UNSUPPORTED_DATA),
                0x8 => return Err(CLOSE_NORMAL),
                0x9 | 0xA if !fin || length > CONTROL_PAYLOAD_BYTES_MAX => return Err(CLOSE_PROTOCOL_ERROR),
                0x9 | 0xA => {}
                _ => return Err(CLOSE_PROTOCOL_ERROR),
            }
            let mut mask = [0u8; 4];
            socket.read_exact(&mut mask).await.map_err(|_| CLOSE_PROTOCOL_ERROR)?;
            let mut control_payload = Vec::new();
            let mut offset = 0usize;
            let mut remaining = length;
            while remaining > 0 {
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(chunk.len());
                let piece = &mut chunk[..take];
                socket.read_exact(piece).await.map_err(|_| CLOSE_PROTOCOL_ERROR)?;
                for byte in piece.iter_mut() {
                    *byte ^= mask[offset % 4];
                    offset += 1;
                }
                remaining -= take as u64;
                if opcode == 0x9 || opcode == 0xA {
                    control_payload.extend_from_slice(piece);
                } else if mqtt.write_all(piece).await.is_err() {
                    // The MQTT connection ended; what the client still sends goes nowhere.
                    return Ok(());
                }
            }
            if opcode == 0x9 {
                let _ = control.send(Control::Pong(control_payload)).await;
            }
        }
    }
    .await;
    if let Err(code) = outcome {
        let _ = control.send(Control::Close(code)).await;
    }
    // Ends the MQTT connection's input (dropping one half of the pipe would not).
    let _ = mqtt.shutdown().await;
}

/// Sends what the MQTT connection writes as binary frames, and the reader's pongs and close,
/// until the connection's output ends; then closes the WebSocket.
async fn bytes_to_frames<R, W>(mut mqtt: R, mut socket: W, mut controls: mpsc::Receiver<Control>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut chunk = vec![0u8; OUT_CHUNK_BYTES];
    let mut close_code = CLOSE_NORMAL;
    loop {
        tokio::select! {
            read = mqtt.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if send_frame(&mut socket, 0x2, &chunk[..read]).await.is_err() {
                        return;
                    }
                }
            },
            Some(control) = controls.recv() => match control {
                Control::Pong(payload) => {
                    if send_frame(&mut socket, 0xA, &payload).await.is_err() {
                        return;
                    }
                }
                Control::Close(code) => {
                    close_code = code;
                    break;
                }
            },
        }
    }
    let _ = send_frame(&mut socket, 0x8, &close_code.to_be_bytes()).await;
    let _ = socket.shutdown().await;
}

/// Writes one unmasked, final frame (servers do not mask, RFC 6455 section 5.1).
async fn send_frame<W: AsyncWrite + Unpin>(
    socket: &mut W,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode);
    match payload.len() {
        short @ 0..=125 => frame.push(short as u8),
        medium @ 126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            frame.push(127);
            frame.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    match tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(&frame)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "a WebSocket write timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    /// Frames as a client sends them: masked.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(index, byte)| byte ^ mask[index % 4]));
        frame
    }

    #[tokio::test]
    async fn payloads_are_joined_pings_answered_and_text_refused() {
        let mut input = client_frame(0x2, b"MQ");
        input.extend(client_frame(0x9, b"hi"));
        input.extend(client_frame(0x0, b"TT"));
        input.extend(client_frame(0x1, b"text"));
        input.extend(client_frame(0x2, b"never"));
        let (control, mut controls) = mpsc::channel(4);
        let mut out = Vec::new();
        frames_to_bytes(input.as_slice(), &mut out, control, 1024).await;
        assert_eq!(out, b"MQTT");
        assert!(matches!(controls.recv().await, Some(Control::Pong(payload)) if payload == b"hi"));
        assert!(matches!(controls.recv().await, Some(Control::Close(CLOSE_UNSUPPORTED_DATA))));
    }

    #[tokio::test]
    async fn a_payload_larger_than_a_chunk_arrives_whole() {
        let payload: Vec<u8> = (0..10_000u32).map(|index| index as u8).collect();
        let mask = [9u8, 8, 7, 6];
        let mut frame = vec![0x82, 0x80 | 126];
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(index, byte)| byte ^ mask[index % 4]));
        let (control, _controls) = mpsc::channel(4);
        let mut out = Vec::new();
        frames_to_bytes(frame.as_slice(), &mut out, control, FRAME_PAYLOAD_BYTES_MAX).await;
        assert_eq!(out, payload);
    }

    #[tokio::test]
    async fn unmasked_and_oversized_frames_close_the_connection() {
        let (control, mut controls) = mpsc::channel(4);
        frames_to_bytes(&[0x82u8, 0x01, b'x'][..], tokio::io::sink(), control, 1024).await;
        assert!(matches!(controls.recv().await, Some(Control::Close(CLOSE_PROTOCOL_ERROR))));
        let (control, mut controls) = mpsc::channel(4);
        let big = client_frame(0x2, &[0u8; 100]);
        frames_to_bytes(big.as_slice(), tokio::io::sink(), control, 99).await;
        assert!(matches!(controls.recv().await, Some(Control::Close(CLOSE_TOO_BIG))));
    }

    #[tokio::test]
    async fn frames_out_are_unmasked_with_the_right_length_encoding() {
        let mut out = Vec::new();
        send_frame(&mut out, 0x2, &[7u8; 3]).await.expect("written");
        assert_eq!(out, [0x82, 3, 7, 7, 7]);
        let mut out = Vec::new();
        send_frame(&mut out, 0x2, &[0u8; 300]).await.expect("written");
        assert_eq!(out[..4], [0x82, 126, 1, 44]);
        assert_eq!(out.len(), 304);
    }
}
