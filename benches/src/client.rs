//! A lean HTTP/1.1 client (raw hyper connections) that runs on ONE thread of its own, so it takes
//! at most one core from the server and its CPU time can be told apart from the server's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::measure;

pub type Sender = SendRequest<Empty<Bytes>>;

/// Runs `work` on a single-threaded runtime in a thread named `client`; returns its result and
/// the CPU time that thread used.
pub fn on_client_thread<T, F>(work: impl FnOnce() -> F + Send + 'static) -> anyhow::Result<(T, Duration)>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    std::thread::Builder::new()
        .name("client".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let cpu = measure::thread_cpu();
            let out = runtime.block_on(work());
            drop(runtime);
            Ok((out, measure::thread_cpu() - cpu))
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
}

/// One keep-alive HTTP/1.1 connection (Nagle off, as real clients do).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

pub fn request(method: Method, path: &str) -> Request<Empty<Bytes>> {
    Request::builder().method(method).uri(path).header(HOST, "127.0.0.1").body(Empty::new()).expect("a valid request")
}

/// Why a [`post`] failed.
#[derive(Debug)]
pub enum PostError {
    /// The connection is unusable: reconnect before the next request.
    Connection(String),
    /// A transport error on this request, or a non-2xx answer (with its body).
    Request(String),
}

/// `POST path` on a keep-alive connection, the body read to its end; `Ok` on a 2xx.
pub async fn post(sender: &mut Sender, path: &str) -> Result<(), PostError> {
    sender.ready().await.map_err(|e| PostError::Connection(format!("connection: {e}")))?;
    let resp = sender
        .send_request(request(Method::POST, path))
        .await
        .map_err(|e| PostError::Request(format!("request: {e}")))?;
    let status = resp.status();
    match resp.into_body().collect().await {
        Ok(_) if status.is_success() => Ok(()),
        Ok(body) => Err(PostError::Request(format!("{status}: {}", String::from_utf8_lossy(&body.to_bytes())))),
        Err(e) => Err(PostError::Request(format!("reading the body: {e}"))),
    }
}

/// hyper's server sends trailers only to clients that say they accept them.
fn accepting_trailers(mut request: Request<Empty<Bytes>>) -> Request<Empty<Bytes>> {
    request.headers_mut().insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    request
}

/// Result of reading a streamed NDJSON response to its end.
#[derive(Debug, Default)]
pub struct Streamed {
    pub status: u16,
    pub lines: u64,
    pub bytes: u64,
    pub first_byte: Duration,
    pub total: Duration,
    /// The `X-Stream-Error` trailer (`None` when no trailer came).
    pub stream_error: Option<String>,
    /// Whole body, when asked for (small responses and verification only).
    pub body: Vec<u8>,
}

/// GETs `path` on a new connection and reads the body to its end, counting lines and bytes.
pub async fn get_stream(addr: SocketAddr, path: &str, keep_body: bool) -> anyhow::Result<Streamed> {
    let mut sender = connect(addr).await?;
    let started = Instant::now();
    let resp = sender.send_request(accepting_trailers(request(Method::GET, path))).await?;
    let mut out = Streamed { status: resp.status().as_u16(), first_byte: started.elapsed(), ..Default::default() };
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            out.bytes += data.len() as u64;
            out.lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
            if keep_body {
                out.body.extend_from_slice(data);
            }
        } else if let Some(trailers) = frame.trailers_ref() {
            out.stream_error =
                Some(trailers.get("x-stream-error").map(|v| v.to_str().unwrap_or("?").to_string()).unwrap_or_default());
        }
    }
    out.total = started.elapsed();
    Ok(out)
}

/// GETs `path` on a new connection and returns the status and the whole body; an error after
/// `timeout` or when the peer does not answer (a killed peer refuses the connection at once).
pub async fn get_body(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, Vec<u8>)> {
    let streamed = tokio::time::timeout(timeout, get_stream(addr, path, true))
        .await
        .map_err(|_| anyhow::anyhow!("GET {path} on {addr}: no answer within {timeout:?}"))??;
    Ok((streamed.status, streamed.body))
}
