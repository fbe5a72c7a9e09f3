//! The device gateway's sockets, for `serve` and `gateway` alike: the plain MQTT and HTTP
//! listeners, their TLS siblings (`--mqtt-tls-listen`, `--http-tls-listen`) and MQTT over
//! WebSockets (`--mqtt-ws-listen`, wss:// whenever `--tls-cert` is given), bound up front
//! so that a busy port or an unreadable certificate stops the start, and so that the running
//! line can name the port the kernel chose for `HOST:0`.
//!
//! The TLS listeners load `--tls-cert`/`--tls-key` through `tidewater_security::tls`, as the
//! Kafka listeners do, and ask every client for a certificate without requiring one
//! (`ClientAuth::Requested`): whether a certificate is good enough is the gateway's decision,
//! against the devices and CAs registered in the cluster.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tidewater_security::tls::{ClientAuth, TlsIdentity};

use crate::cli::{HttpArgs, MqttArgs};

/// One bound gateway socket.
#[derive(Debug)]
pub(crate) struct Socket {
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    websocket: bool,
}

/// Every gateway socket, by protocol.
#[derive(Debug)]
pub(crate) struct GatewaySockets {
    pub(crate) mqtt: Vec<Socket>,
    pub(crate) http: Vec<Socket>,
}

impl GatewaySockets {
    /// Binds what the flags ask for; the TLS ones need `tls_cert` and `tls_key`.
    pub(crate) fn bind(
        mqtt: &MqttArgs,
        http: &HttpArgs,
        tls_cert: Option<&Path>,
        tls_key: Option<&Path>,
    ) -> anyhow::Result<GatewaySockets> {
        let tls_wanted = mqtt.mqtt_tls_listen.0.is_some() || http.http_tls_listen.0.is_some();
        // WebSockets are wss:// whenever there is a certificate, plain ws:// otherwise.
        let websocket_tls = mqtt.mqtt_ws_listen.0.is_some() && tls_cert.is_some();
        let tls = match (tls_wanted || websocket_tls, tls_cert, tls_key) {
            (false, _, _) => None,
            (true, Some(cert), Some(key)) => {
                let identity = TlsIdentity::load(cert, key, None).context("loading the TLS certificate")?;
                Some(identity.server_config(ClientAuth::Requested, &[]).context("the gateway's TLS listeners")?)
            }
            (true, _, _) => anyhow::bail!(
                "--mqtt-tls-listen and --http-tls-listen need --tls-cert and --tls-key (PEM files of the server's certificate chain and key)"
            ),
        };
        let mut sockets = GatewaySockets { mqtt: Vec::new(), http: Vec::new() };
        let wanted = [
            (false, false, mqtt.mqtt_listen.0, "MQTT", "--mqtt-listen", None),
            (false, false, mqtt.mqtt_tls_listen.0, "MQTT over TLS", "--mqtt-tls-listen", tls.clone()),
            (false, true, mqtt.mqtt_ws_listen.0, "MQTT over WebSockets", "--mqtt-ws-listen", tls.clone()),
            (true, false, http.http_listen.0, "HTTP", "--http-listen", None),
            (true, false, http.http_tls_listen.0, "HTTPS", "--http-tls-listen", tls),
        ];
        for (is_http, websocket, address, what, flag, tls) in wanted {
            let Some(address) = address else { continue };
            let socket = Socket { listener: bind(address, what, flag)?, tls, websocket };
            if is_http {
                sockets.http.push(socket);
            } else {
                sockets.mqtt.push(socket);
            }
        }
        Ok(sockets)
    }

    /// Whether no gateway listener was asked for.
    pub(crate) fn is_empty(&self) -> bool {
        self.mqtt.is_empty() && self.http.is_empty()
    }

    /// The addresses for the running line: (mqtt, mqtt_tls, mqtt_ws, http, http_tls), each
    /// "none" when absent; mqtt_ws is prefixed by ws:// or wss://.
    pub(crate) fn addresses(&self) -> [String; 5] {
        let find = |sockets: &[Socket], tls: bool, websocket: bool| {
            sockets
                .iter()
                .find(|socket| socket.tls.is_some() == tls && socket.websocket == websocket)
                .and_then(|socket| socket.listener.local_addr().ok())
                .map(|address| address.to_string())
        };
        let websocket = match (find(&self.mqtt, false, true), find(&self.mqtt, true, true)) {
            (Some(address), _) => format!("ws://{address}"),
            (None, Some(address)) => format!("wss://{address}"),
            (None, None) => "none".to_string(),
        };
        let none = || "none".to_string();
        [
            find(&self.mqtt, false, false).unwrap_or_else(none),
            find(&self.mqtt, true, false).unwrap_or_else(none),
            websocket,
            find(&self.http, false, false).unwrap_or_else(none),
            find(&self.http, true, false).unwrap_or_else(none),
        ]
    }
}

/// The sockets as the gateway takes them; inside the runtime.
pub(crate) fn listens(sockets: Vec<Socket>) -> anyhow::Result<Vec<tidewater_gateway::Listen>> {
    sockets
        .into_iter()
        .map(|socket| {
            let listener = tokio::net::TcpListener::from_std(socket.listener)
                .context("registering a gateway listener")?;
            Ok(tidewater_gateway::Listen { socket: listener, tls: socket.tls, websocket: socket.websocket })
        })
        .collect()
}

fn bind(address: SocketAddr, what: &str, flag: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("binding the {what} listener to {address} ({flag} none turns it off)"))?;
    listener.set_nonblocking(true).with_context(|| format!("making the {what} listener non-blocking"))?;
    Ok(listener)
}
