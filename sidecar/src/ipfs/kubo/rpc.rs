//! HTTP plumbing for the Kubo RPC API: where the daemon is, how a call is sent, and how a failed
//! call is turned into an [`Error`]. Built on hyper directly because reqwest does not expose the
//! trailers that carry mid-stream errors.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use multiaddr::{Multiaddr, Protocol};

use crate::ndjson::{read_to_end, ErrorEnvelope, IPFS_DAEMON};
use crate::{Error, Result};

/// A request body: empty for most calls, the client's upload for `add`.
pub(super) type RequestBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// The daemon runs beside the peer: a connection that takes longer than this will not come.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Below js-ipfs's 5 s keep-alive, so an idle connection is dropped by us before the daemon closes
/// it under a request we are sending.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A connection to one daemon's RPC API.
pub(super) struct Rpc {
    client: Client<HttpConnector, RequestBody>,
    /// `http://host:port`.
    base_url: String,
}

impl Rpc {
    pub(super) fn new(node: &Multiaddr) -> Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Rpc { client, base_url: base_url(node)? })
    }

    pub(super) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /api/v0/<command>?<query>` without a body. Returns the response once its status says
    /// success; any other status becomes the daemon's error.
    pub(super) async fn call(&self, command: &str, query: &[(&str, &str)]) -> Result<Response<Incoming>> {
        let body = Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        self.call_with_body(command, query, None, body).await
    }

    /// As [`Rpc::call`], sending `body` with the given `Content-Type`.
    pub(super) async fn call_with_body(
        &self,
        command: &str,
        query: &[(&str, &str)],
        content_type: Option<&str>,
        body: RequestBody,
    ) -> Result<Response<Incoming>> {
        let url = self.url(command, query);
        let mut request = Request::builder().method(Method::POST).uri(&url);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(body).map_err(|e| Error::Ipfs(format!("building request {url}: {e}")))?;
        let response = self.client.request(request).await.map_err(|e| {
            let detail = error_chain(&e);
            if e.is_connect() || connection_lost(&e) {
                Error::IpfsUnreachable(format!("{}: {detail}", self.base_url))
            } else {
                Error::Ipfs(format!("{command}: {detail}"))
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_response(command, response).await)
    }

    fn url(&self, command: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}/api/v0/{command}", self.base_url);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish());
        }
        url
    }
}

/// `http://host:port` for an `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>` address, with an optional
/// trailing `/http` (js-ipfs writes its API address that way).
pub(super) fn base_url(node: &Multiaddr) -> Result<String> {
    let unsupported = || {
        Error::Config(format!("node_multiaddress {node}: expected /ip4|/ip6|/dns|/dns4|/dns6/<host>/tcp/<port>[/http]"))
    };
    let mut parts = node.iter();
    let host = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.to_string(),
        Some(Protocol::Ip6(ip)) => format!("[{ip}]"),
        Some(Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name)) => name.to_string(),
        _ => return Err(unsupported()),
    };
    let Some(Protocol::Tcp(port)) = parts.next() else {
        return Err(unsupported());
    };
    match (parts.next(), parts.next()) {
        (None | Some(Protocol::Http), None) => Ok(format!("http://{host}:{port}")),
        _ => Err(unsupported()),
    }
}

/// The daemon's error for a non-success status: its envelope's message when there is one.
async fn error_response(command: &str, response: Response<Incoming>) -> Error {
    let status = response.status();
    let body = match read_to_end(response.into_body(), IPFS_DAEMON).await {
        Ok(body) => body,
        Err(e) => return e,
    };
    error_from_body(command, status, &body)
}

pub(super) fn error_from_body(command: &str, status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => Error::Ipfs(envelope.message),
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            Error::Ipfs(format!("{command}: {status}: {}", text.trim()))
        }
    }
}

/// The daemon closed the connection without answering: it stopped or crashed (a pooled
/// connection to a daemon that has since died fails this way rather than with a refused connect).
fn connection_lost(error: &hyper_util::client::legacy::Error) -> bool {
    let source = std::error::Error::source(error).and_then(|s| s.downcast_ref::<hyper::Error>());
    source.is_some_and(|e| e.is_incomplete_message() || e.is_closed() || e.is_canceled())
}

/// hyper-util's errors say little at the top ("client error (Connect)"): the cause is below.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_from_multiaddr() {
        let url = |text: &str| base_url(&text.parse().unwrap());
        assert_eq!(url("/ip4/127.0.0.1/tcp/5001").unwrap(), "http://127.0.0.1:5001");
        assert_eq!(url("/ip4/127.0.0.1/tcp/5001/http").unwrap(), "http://127.0.0.1:5001");
        assert_eq!(url("/ip6/::1/tcp/5001").unwrap(), "http://[::1]:5001");
        assert_eq!(url("/dns4/ipfs.default.svc/tcp/5001").unwrap(), "http://ipfs.default.svc:5001");
        for bad in ["/ip4/127.0.0.1/udp/5001", "/ip4/127.0.0.1", "/unix/api.sock", "/ip4/1.2.3.4/tcp/1/https"] {
            assert!(matches!(url(bad), Err(Error::Config(_))), "{bad}");
        }
    }

    #[test]
    fn envelope_message_becomes_the_error() {
        let body = br#"{"Message":"Failed to remove pin: x is not pinned","Code":0,"Type":"error"}"#;
        let err = error_from_body("pin/rm", StatusCode::INTERNAL_SERVER_ERROR, body);
        assert!(matches!(&err, Error::Ipfs(m) if m == "Failed to remove pin: x is not pinned"), "{err:?}");
    }

    #[test]
    fn non_envelope_error_keeps_status_and_text() {
        let err = error_from_body("id", StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert!(matches!(&err, Error::Ipfs(m) if m == "id: 502 Bad Gateway: upstream down"), "{err:?}");
    }

    #[test]
    fn query_is_url_encoded() {
        let rpc = Rpc::new(&"/ip4/127.0.0.1/tcp/5001".parse().unwrap()).unwrap();
        assert_eq!(
            rpc.url("resolve", &[("arg", "/ipfs/Qm x/a&b")]),
            "http://127.0.0.1:5001/api/v0/resolve?arg=%2Fipfs%2FQm+x%2Fa%26b"
        );
        assert_eq!(rpc.url("id", &[]), "http://127.0.0.1:5001/api/v0/id");
    }
}
