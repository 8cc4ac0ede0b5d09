//! A typed client of the cluster REST API, shared by the CLI, the tests and the operator.
//!
//! Built on hyper's client (not reqwest) because streaming endpoints report late failures in an
//! HTTP trailer, which reqwest cannot read. Plain HTTP only.
//!
//! ```no_run
//! # async fn demo() -> cluster_client::Result<()> {
//! use futures::TryStreamExt;
//! let client = cluster_client::client::Client::new("/ip4/127.0.0.1/tcp/9094")?.with_basic_auth("admin", "pw");
//! let pins: Vec<_> = client.status_all(None, &[], false).await?.try_collect().await?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use futures::future;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, TE};
use http::{Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::de::DeserializeOwned;

use crate::ndjson::{NdjsonReader, Source};
use crate::types::{
    format_go_duration, AddPeer, Alert, ApiError, BandwidthByProtocol, Cid, ConnectGraph, ConsensusStatus, Departure,
    DepartureStatus, GlobalPinInfo, GlobalRepoGc, Id, Introduced, Metric, PeerAddresses, Pin, PinOptions, PinType,
    Readiness, Token, Version, Vouch,
};
use crate::{Error, Result};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// `(host, port)` of a TCP multiaddr: `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`.
pub fn multiaddr_host_port(addr: &Multiaddr) -> Result<(String, u16)> {
    let mut parts = addr.iter();
    let host = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.to_string(),
        Some(Protocol::Ip6(ip)) => ip.to_string(),
        Some(Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h)) => h.to_string(),
        _ => return Err(Error::Config(format!("{addr}: expected /ip4, /ip6 or /dns address"))),
    };
    match parts.next() {
        Some(Protocol::Tcp(port)) => Ok((host, port)),
        _ => Err(Error::Config(format!("{addr}: expected /tcp/<port> after the host"))),
    }
}

/// One part of [`Client::add`]. `name` is the path inside the upload (`dir/a.txt`): a directory's
/// entries follow the directory itself.
#[derive(Clone, Debug)]
pub struct AddFile {
    pub name: String,
    pub content: AddContent,
}

#[derive(Clone, Debug)]
pub enum AddContent {
    Bytes(Bytes),
    /// A file on disk, streamed as the upload goes.
    Path(PathBuf),
    Directory,
}

impl AddFile {
    pub fn bytes(name: impl Into<String>, data: impl Into<Bytes>) -> Self {
        AddFile { name: name.into(), content: AddContent::Bytes(data.into()) }
    }

    /// The multipart head of this part. The name is percent-encoded (`dir%2Fa.txt`) as Go's and
    /// JS's IPFS clients send it, with `%20` for spaces, which both daemons decode.
    fn part_head(&self, boundary: &str) -> Bytes {
        let name = form_urlencoded::byte_serialize(self.name.as_bytes()).collect::<String>().replace('+', "%20");
        let content_type = match self.content {
            AddContent::Directory => "application/x-directory",
            AddContent::Bytes(_) | AddContent::Path(_) => "application/octet-stream",
        };
        Bytes::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n"
        ))
    }

    /// The part: its head, its content, the line end before the next boundary.
    fn into_part(self, boundary: &str) -> BoxStream<'static, std::io::Result<Bytes>> {
        let head = stream::once(future::ready(Ok(self.part_head(boundary))));
        let content = match self.content {
            AddContent::Bytes(data) => stream::once(future::ready(Ok(data))).boxed(),
            AddContent::Directory => stream::empty().boxed(),
            AddContent::Path(path) => stream::once(tokio::fs::File::open(path))
                .map_ok(tokio_util::io::ReaderStream::new)
                .try_flatten()
                .boxed(),
        };
        head.chain(content).chain(stream::once(future::ready(Ok(Bytes::from_static(b"\r\n"))))).boxed()
    }
}

#[derive(Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<HttpConnector, ReqBody>,
    base: String,
    authorization: Option<HeaderValue>,
    timeout: Option<Duration>,
}

impl Client {
    /// `endpoint` is a URL (`http://host:9094`) or a multiaddr (`/ip4/127.0.0.1/tcp/9094`).
    pub fn new(endpoint: &str) -> Result<Self> {
        let base = if endpoint.starts_with('/') {
            let addr: Multiaddr = endpoint.parse().map_err(|e| Error::Config(format!("{endpoint}: {e}")))?;
            let (host, port) = multiaddr_host_port(&addr)?;
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            format!("http://{host}:{port}")
        } else if let Some(rest) = endpoint.strip_prefix("http://") {
            format!("http://{}", rest.trim_end_matches('/'))
        } else {
            return Err(Error::Config(format!(
                "{endpoint}: expected an http:// URL or a multiaddr (https is not supported)"
            )));
        };
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        Ok(Client { http, base, authorization: None, timeout: None })
    }

    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        let value = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        self.authorization = HeaderValue::from_str(&value).ok();
        self
    }

    pub fn with_bearer_token(mut self, token: &str) -> Self {
        self.authorization = HeaderValue::from_str(&format!("Bearer {token}")).ok();
        self
    }

    /// Bounds whole requests; for streams, the wait for the response head.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn id(&self) -> Result<Id> {
        self.json(Method::GET, "/id", &[]).await
    }

    pub async fn version(&self) -> Result<Version> {
        self.json(Method::GET, "/version", &[]).await
    }

    pub async fn peers(&self) -> Result<BoxStream<'static, Result<Id>>> {
        self.stream(Method::GET, "/peers", &[], empty()).await
    }

    /// `POST /peers`: adds `peer`, reachable at `addresses` (its cluster addresses; empty when it
    /// already connected to that member). The added peer's ID.
    pub async fn add_peer(&self, peer: &PeerId, addresses: &[Multiaddr]) -> Result<Id> {
        let body =
            AddPeer { peer_id: peer.to_string(), addresses: addresses.iter().map(ToString::to_string).collect() };
        let body = serde_json::to_vec(&body).map_err(|e| Error::BadRequest(format!("encoding the request: {e}")))?;
        let request = self.request(Method::POST, "/peers", &[], full(body), Some("application/json"))?;
        parse_body(expect_success(self.send(request).await?).await?).await
    }

    /// `DELETE /peers/{peer}`: returns once the removal is committed. `force`: even when it leaves
    /// a cluster that cannot lose another peer while other members are unreachable.
    pub async fn remove_peer(&self, peer: &PeerId, force: bool) -> Result<()> {
        let query: Vec<(String, String)> =
            force.then(|| ("force".to_string(), "true".to_string())).into_iter().collect();
        let request = self.request(Method::DELETE, &format!("/peers/{peer}"), &query, empty(), None)?;
        expect_success(self.send(request).await?).await.map(drop)
    }

    /// `GET /consensus` (ours): the peer's view of consensus and membership.
    pub async fn consensus(&self) -> Result<ConsensusStatus> {
        self.json(Method::GET, "/consensus", &[]).await
    }

    /// `GET /consensus/departure?wait=` (ours): the peer's departure once decided, or undecided
    /// after `wait`. Give the client a timeout above `wait`.
    pub async fn departure(&self, wait: Duration) -> Result<Departure> {
        let query = [("wait".to_string(), format_go_duration(wait))];
        let status: DepartureStatus = self.json(Method::GET, "/consensus/departure", &query).await?;
        Ok(status.departure)
    }

    /// `PUT /consensus/departure` (ours): declares that the peer's pod only restarts.
    pub async fn declare_restart(&self) -> Result<Departure> {
        let status: DepartureStatus =
            self.put_json("/consensus/departure", &DepartureStatus { departure: Departure::Restart }).await?;
        Ok(status.departure)
    }

    /// `PUT /consensus/addresses` (ours): tells the peer where these members are now; how many
    /// it connects to.
    pub async fn introduce(&self, peers: &[PeerAddresses]) -> Result<usize> {
        let answer: Introduced = self.put_json("/consensus/addresses", peers).await?;
        Ok(answer.connecting)
    }

    /// `PUT /consensus/vouch` (ours): the peer reports ready without a leader for `seconds`, or
    /// until it knows one; the seconds it granted.
    pub async fn vouch(&self, seconds: u64) -> Result<u64> {
        let answer: Vouch = self.put_json("/consensus/vouch", &Vouch { seconds }).await?;
        Ok(answer.seconds)
    }

    /// A `PUT` of a JSON body, answered with JSON.
    async fn put_json<B: serde::Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let body = serde_json::to_vec(body).map_err(|e| Error::BadRequest(format!("encoding the request: {e}")))?;
        let request = self.request(Method::PUT, path, &[], full(body), Some("application/json"))?;
        parse_body(expect_success(self.send(request).await?).await?).await
    }

    /// `POST /consensus/init` (ours): starts a new cluster with the peer as its only member.
    pub async fn init_cluster(&self) -> Result<ConsensusStatus> {
        self.json(Method::POST, "/consensus/init", &[]).await
    }

    /// `POST /pins/{cid}`: the pin as committed.
    pub async fn pin(&self, cid: &Cid, options: &PinOptions) -> Result<Pin> {
        self.json(Method::POST, &format!("/pins/{cid}"), &options.to_query()).await
    }

    /// `POST /pins/{ipfs,ipns,ipld}/...`; `path` starts with `/ipfs/`, `/ipns/` or `/ipld/`.
    pub async fn pin_path(&self, path: &str, options: &PinOptions) -> Result<Pin> {
        self.json(Method::POST, &format!("/pins{}", path.trim_end_matches('/')), &options.to_query()).await
    }

    pub async fn unpin(&self, cid: &Cid) -> Result<Pin> {
        self.json(Method::DELETE, &format!("/pins/{cid}"), &[]).await
    }

    pub async fn unpin_path(&self, path: &str) -> Result<Pin> {
        self.json(Method::DELETE, &format!("/pins{}", path.trim_end_matches('/')), &[]).await
    }

    /// `GET /allocations`; an empty `filter` lists every type.
    pub async fn allocations(&self, filter: &[PinType]) -> Result<BoxStream<'static, Result<Pin>>> {
        let query = if filter.is_empty() {
            vec![]
        } else {
            vec![("filter".to_string(), filter.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","))]
        };
        self.stream(Method::GET, "/allocations", &query, empty()).await
    }

    pub async fn allocation(&self, cid: &Cid) -> Result<Pin> {
        self.json(Method::GET, &format!("/allocations/{cid}"), &[]).await
    }

    pub async fn status(&self, cid: &Cid, local: bool) -> Result<GlobalPinInfo> {
        self.json(Method::GET, &format!("/pins/{cid}"), &local_query(local)).await
    }

    /// `GET /pins`: `filter` is a comma-separated list of status names (`pinned,error`...);
    /// non-empty `cids` restricts the listing to them.
    pub async fn status_all(
        &self,
        filter: Option<&str>,
        cids: &[Cid],
        local: bool,
    ) -> Result<BoxStream<'static, Result<GlobalPinInfo>>> {
        let mut query = local_query(local);
        if let Some(filter) = filter.filter(|f| !f.is_empty()) {
            query.push(("filter".into(), filter.into()));
        }
        if !cids.is_empty() {
            query.push(("cids".into(), cids.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")));
        }
        self.stream(Method::GET, "/pins", &query, empty()).await
    }

    pub async fn recover(&self, cid: &Cid, local: bool) -> Result<GlobalPinInfo> {
        self.json(Method::POST, &format!("/pins/{cid}/recover"), &local_query(local)).await
    }

    pub async fn recover_all(&self, local: bool) -> Result<BoxStream<'static, Result<GlobalPinInfo>>> {
        self.stream(Method::POST, "/pins/recover", &local_query(local), empty()).await
    }

    /// `POST /add` of `files` (read from disk as they are sent); `query` carries pin options and
    /// add parameters.
    pub async fn add(
        &self,
        files: Vec<AddFile>,
        query: &[(String, String)],
    ) -> Result<BoxStream<'static, Result<crate::types::AddedOutput>>> {
        const BOUNDARY: &str = "sidecar-client-boundary-7d1c2f";
        let closing = stream::once(future::ready(Ok(Bytes::from(format!("--{BOUNDARY}--\r\n")))));
        let frames = stream::iter(files)
            .flat_map(|file| file.into_part(BOUNDARY))
            .chain(closing)
            .map_ok(Frame::data)
            .map_err(BoxError::from);
        let body = StreamBody::new(frames).boxed_unsync();
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        let request = self.request(Method::POST, "/add", query, body, Some(&content_type))?;
        let resp = self.send(request).await?;
        stream_of(resp).await
    }

    pub async fn metric_names(&self) -> Result<Vec<String>> {
        self.json(Method::GET, "/monitor/metrics", &[]).await
    }

    pub async fn metrics(&self, name: &str) -> Result<Vec<Metric>> {
        self.json(Method::GET, &format!("/monitor/metrics/{name}"), &[]).await
    }

    pub async fn alerts(&self) -> Result<Vec<Alert>> {
        self.json(Method::GET, "/health/alerts", &[]).await
    }

    /// `GET /health/bandwidth`.
    pub async fn bandwidth(&self) -> Result<BandwidthByProtocol> {
        self.json(Method::GET, "/health/bandwidth", &[]).await
    }

    pub async fn health_graph(&self) -> Result<ConnectGraph> {
        self.json(Method::GET, "/health/graph", &[]).await
    }

    /// `GET /health`: `Ok` when the peer answers 204.
    pub async fn health(&self) -> Result<()> {
        let resp = self.send(self.request(Method::GET, "/health", &[], empty(), None)?).await?;
        expect_success(resp).await.map(drop)
    }

    /// `GET /readyz`: the report whether ready (200) or not (503).
    pub async fn readiness(&self) -> Result<Readiness> {
        let resp = self.send(self.request(Method::GET, "/readyz", &[], empty(), None)?).await?;
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            return parse_body(resp).await;
        }
        parse_body(expect_success(resp).await?).await
    }

    pub async fn ipfs_gc(&self, local: bool) -> Result<GlobalRepoGc> {
        self.json(Method::POST, "/ipfs/gc", &local_query(local)).await
    }

    /// `POST /token`: a JWT for the authenticated user, for [`Client::with_bearer_token`].
    pub async fn token(&self) -> Result<String> {
        Ok(self.json::<Token>(Method::POST, "/token", &[]).await?.token)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: ReqBody,
        content_type: Option<&str>,
    ) -> Result<Request<ReqBody>> {
        let mut uri = format!("{}{path}", self.base);
        if !query.is_empty() {
            let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
            uri.push('?');
            uri.push_str(&encoded);
        }
        let mut builder = Request::builder().method(method).uri(&uri).header(TE, "trailers");
        if let Some(auth) = &self.authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        builder.body(body).map_err(|e| Error::BadRequest(format!("cannot build request for {uri}: {e}")))
    }

    async fn send(&self, request: Request<ReqBody>) -> Result<http::Response<Incoming>> {
        let what = format!("{} {}", request.method(), request.uri());
        let call = self.http.request(request);
        let result = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| Error::Timeout(what.clone()))?,
            None => call.await,
        };
        result.map_err(|e| Error::Io(std::io::Error::other(format!("{what}: {e}"))))
    }

    async fn json<T: DeserializeOwned>(&self, method: Method, path: &str, query: &[(String, String)]) -> Result<T> {
        let request = self.request(method, path, query, empty(), None)?;
        let what = format!("{} {}", request.method(), request.uri());
        let call = async { parse_body(expect_success(self.send(request).await?).await?).await };
        match self.timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| Error::Timeout(what))?,
            None => call.await,
        }
    }

    async fn stream<T: DeserializeOwned + Send + 'static>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: ReqBody,
    ) -> Result<BoxStream<'static, Result<T>>> {
        let resp = self.send(self.request(method, path, query, body, None)?).await?;
        stream_of(resp).await
    }
}

fn empty() -> ReqBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(bytes: Vec<u8>) -> ReqBody {
    Full::new(Bytes::from(bytes)).map_err(|never| match never {}).boxed_unsync()
}

fn local_query(local: bool) -> Vec<(String, String)> {
    if local {
        vec![("local".into(), "true".into())]
    } else {
        vec![]
    }
}

async fn stream_of<T: DeserializeOwned + Send + 'static>(
    resp: http::Response<Incoming>,
) -> Result<BoxStream<'static, Result<T>>> {
    let resp = expect_success(resp).await?;
    if resp.status() == StatusCode::NO_CONTENT {
        return Ok(stream::empty().boxed());
    }
    Ok(NdjsonReader::new(resp.into_body(), CLUSTER_PEER).into_stream())
}

/// The response when it is a success; otherwise its error JSON as a crate error.
async fn expect_success(resp: http::Response<Incoming>) -> Result<http::Response<Incoming>> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let message = match serde_json::from_slice::<ApiError>(&body) {
        Ok(api) => api.message,
        Err(_) => String::from_utf8_lossy(&body).trim().to_string(),
    };
    Err(error_from_message(status.as_u16(), message))
}

async fn parse_body<T: DeserializeOwned>(resp: http::Response<Incoming>) -> Result<T> {
    let body = resp.into_body().collect().await.map_err(|e| Error::Io(std::io::Error::other(e)))?.to_bytes();
    crate::ndjson::decode_line(&body, CLUSTER_PEER)
}

/// The crate error for a status and the server's message: the statuses clients act on map to
/// their variants, anything else keeps its code and message.
fn error_from_message(status: u16, message: String) -> Error {
    match status {
        400 if message.starts_with("error decoding Cid") => Error::InvalidCid(message),
        400 => Error::BadRequest(message),
        401 => Error::Unauthorized(message),
        404 => Error::NotFound(message),
        code => Error::Remote { code, message },
    }
}

/// The peer's streams, for [`NdjsonReader`]: a failure reported in the trailer is a server error.
const CLUSTER_PEER: Source = Source { name: "the cluster peer", error: |message| Error::Remote { code: 500, message } };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_multiaddrs_and_urls() {
        assert_eq!(Client::new("/ip4/127.0.0.1/tcp/9094").unwrap().base_url(), "http://127.0.0.1:9094");
        assert_eq!(Client::new("/ip6/::1/tcp/9094").unwrap().base_url(), "http://[::1]:9094");
        assert_eq!(Client::new("/dns/cluster-0.svc/tcp/9094").unwrap().base_url(), "http://cluster-0.svc:9094");
        assert_eq!(Client::new("http://localhost:9094/").unwrap().base_url(), "http://localhost:9094");
        assert!(Client::new("https://x").is_err());
        assert!(Client::new("/ip4/1.2.3.4/udp/1").is_err());
    }

    #[test]
    fn statuses_become_error_kinds() {
        let e = |s, m: &str| error_from_message(s, m.to_string());
        assert!(matches!(e(400, "error decoding Cid: bad"), Error::InvalidCid(_)));
        assert!(matches!(e(400, "parameter replication-min invalid"), Error::BadRequest(_)));
        assert!(matches!(e(401, "unauthorized: access denied"), Error::Unauthorized(_)));
        assert!(matches!(e(404, "not found"), Error::NotFound(_)));
        assert!(matches!(e(500, "not enough peers to allocate CID"), Error::Remote { code: 500, .. }));
        assert_eq!(e(502, "bad gateway").to_string(), "bad gateway");
    }
}
