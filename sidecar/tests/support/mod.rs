//! What the wire-level API tests share: a real `Cluster` (with the in-process fake IPFS daemon)
//! behind the REST API on a loopback port, and a raw HTTP/1.1 client on a TcpStream that shows
//! exactly what the server sent (status, headers, body, trailers).
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use serde_json::Value;
use sidecar::api::{serve, RestApiConfig};
use sidecar::cluster::{Cluster, ClusterConfig};
use sidecar::identity::Identity;
use sidecar::ipfs::fake::FakeIpfs;
use sidecar::p2p::P2pConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Server {
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

pub async fn server(config: RestApiConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut p2p = P2pConfig::new(rand::random());
    p2p.listen = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let peer = ClusterConfig::new("peer-0", p2p);
    let cluster = Cluster::start(peer, Identity::generate(), Arc::new(FakeIpfs::new()), dir.path()).await.unwrap();
    let config = RestApiConfig { http_listen_multiaddress: "/ip4/127.0.0.1/tcp/0".parse().unwrap(), ..config };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, _task) = serve(cluster, config, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    Server { addr, _stop: stop, _dir: dir }
}

pub fn with_auth() -> RestApiConfig {
    RestApiConfig { basic_auth_credentials: Some([("admin".into(), "s3cret".into())].into()), ..Default::default() }
}

pub fn basic(user: &str, pass: &str) -> String {
    format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `None` when the response was not chunked.
    pub trailers: Option<Vec<(String, String)>>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// NDJSON: every line one JSON object, the body ending with a newline.
    pub fn lines(&self) -> Vec<Value> {
        let text = self.text();
        assert!(text.ends_with('\n'), "NDJSON ends with a newline: {text:?}");
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.as_ref()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn assert_error(&self, status: u16, message_start: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        let json = self.json();
        assert_eq!(json["code"], status, "{json}");
        let message = json["message"].as_str().unwrap();
        assert!(message.starts_with(message_start), "{message:?} does not start with {message_start:?}");
        assert_eq!(json.as_object().unwrap().len(), 2, "{json}");
    }
}

/// Sends `head` (request line + headers, without the blank line) and `body`; reads to EOF.
pub async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Raw {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("{head}\r\nHost: {addr}\r\nTE: trailers\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    parse(&bytes)
}

pub async fn get(addr: SocketAddr, path: &str) -> Raw {
    raw(addr, &format!("GET {path} HTTP/1.1"), b"").await
}

pub async fn send(addr: SocketAddr, method: &str, path: &str) -> Raw {
    raw(addr, &format!("{method} {path} HTTP/1.1\r\nContent-Length: 0"), b"").await
}

pub fn header_pairs<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

pub fn parse(bytes: &[u8]) -> Raw {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a header section");
    let head = std::str::from_utf8(&bytes[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = header_pairs(lines);
    let mut rest = &bytes[split + 4..];
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if !chunked {
        return Raw { status, headers, body: rest.to_vec(), trailers: None };
    }
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            let trailers = header_pairs(std::str::from_utf8(rest).unwrap().split("\r\n"));
            return Raw { status, headers, body, trailers: Some(trailers) };
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

pub fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect()
}

pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}
