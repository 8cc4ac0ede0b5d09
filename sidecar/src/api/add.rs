//! `POST /add`: the client's multipart upload, re-framed for the IPFS daemon's `add`.
//!
//! Clients send multipart in many shapes (chunked without Content-Length, quoted boundaries,
//! `Content-Disposition: file; filename=...` without a `name`). The body is parsed with multer as
//! it streams in and re-encoded in the one shape Kubo expects (`form-data; name="file"`), part by
//! part, without buffering files. With `format=car` the first part is a CAR, imported through the
//! daemon's `dag/import` instead.

use bytes::{Buf, Bytes};
use futures::stream::{self, BoxStream, Stream, StreamExt, TryStreamExt};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use multer::{Constraints, Field, Multipart, SizeLimit};
use warp::reply::Response;

use super::error::{error_from, error_response, json_response};
use super::routes::{Ctx, Query};
use super::stream::ndjson;
use crate::cluster::AddOptions;
use crate::ipfs::AddRequest;
use crate::types::{AddedOutput, PinOptions};
use crate::{Error, Result};

/// Query parameters handed to the daemon's `add` unchanged.
const DAEMON_PARAMS: [&str; 11] = [
    "recursive",
    "hidden",
    "wrap-with-directory",
    "progress",
    "cid-version",
    "raw-leaves",
    "chunker",
    "hash",
    "nocopy",
    "inline",
    "inline-limit",
];

/// What the upload holds: files to import as UnixFS, or one CAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddFormat {
    Unixfs,
    Car,
}

/// The query of `POST /add`, split into what the cluster acts on and what the daemon gets.
#[derive(Debug)]
pub(crate) struct AddParams {
    pub format: AddFormat,
    pub options: AddOptions,
    /// `stream-channels=false`: answer with one JSON array instead of NDJSON.
    pub stream_channels: bool,
    pub daemon: Vec<(String, String)>,
}

impl AddParams {
    pub(crate) fn from_query(query: &Query) -> Result<Self> {
        let format = match query.get("format").unwrap_or("") {
            "" | "unixfs" => AddFormat::Unixfs,
            "car" if query.bool_param("wrap-with-directory", false)? => {
                return Err(Error::BadRequest("cannot wrap a CAR file upload".into()))
            }
            "car" => AddFormat::Car,
            other => return Err(Error::BadRequest(format!("unknown add format: {other}"))),
        };
        let options = AddOptions {
            pin: PinOptions::from_query(query.pairs())?,
            no_pin: query.bool_param("no-pin", false)?,
            local: query.bool_param("local", false)?,
        };
        let mut daemon: Vec<(String, String)> = query
            .pairs()
            .filter(|(k, v)| DAEMON_PARAMS.contains(k) && !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if query.get("layout") == Some("trickle") {
            daemon.push(("trickle".into(), "true".into()));
        }
        Ok(AddParams { format, options, stream_channels: query.bool_param("stream-channels", true)?, daemon })
    }
}

pub(crate) async fn handle<S, B>(query: Query, headers: HeaderMap, body: S, ctx: Ctx) -> Response
where
    S: Stream<Item = std::result::Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    let params = match AddParams::from_query(&query) {
        Ok(params) => params,
        Err(err) => return error_from(&err),
    };
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Ok(boundary) = multer::parse_boundary(content_type) else {
        return error_response(StatusCode::BAD_REQUEST, "request Content-Type isn't multipart/form-data");
    };
    let mut limit = SizeLimit::new();
    if let Some(max) = ctx.max_add_body_size {
        limit = limit.whole_stream(max);
    }
    let body = body.map_ok(|mut buf| buf.copy_to_bytes(buf.remaining()));
    let mut multipart = Multipart::with_constraints(body, boundary, Constraints::new().size_limit(limit));
    // The first part is read here so that a malformed or oversized upload is a clean 400/413.
    let first = match multipart.next_field().await {
        Ok(Some(field)) => field,
        Ok(None) => return error_response(StatusCode::BAD_REQUEST, "no files in the multipart request"),
        Err(err) => return multipart_error(&err),
    };
    let outputs = match params.format {
        AddFormat::Unixfs => {
            let ours = new_boundary();
            let request = AddRequest {
                content_type: format!("multipart/form-data; boundary={ours}"),
                body: reencode(first, multipart, ours),
                params: params.daemon,
            };
            ctx.cluster.add(request, params.options).await
        }
        // Only the first part counts, as in the reference.
        AddFormat::Car => {
            let name = first.file_name().or(first.name()).unwrap_or_default().to_string();
            let archive = first.map_err(std::io::Error::other).boxed();
            let added = ctx.cluster.add_car(name, archive, params.options).await;
            added.map(|output| stream::once(async { Ok(output) }).boxed())
        }
    };
    let outputs = match outputs {
        Ok(outputs) => outputs,
        Err(err) => return error_from(&err),
    };
    if params.stream_channels {
        return ndjson(outputs).await;
    }
    match outputs.try_collect::<Vec<AddedOutput>>().await {
        Ok(all) => json_response(StatusCode::OK, &all),
        Err(err) => error_from(&err),
    }
}

fn multipart_error(err: &multer::Error) -> Response {
    match err {
        multer::Error::StreamSizeExceeded { limit } => {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds {limit} bytes"))
        }
        other => error_response(StatusCode::BAD_REQUEST, format!("error reading multipart body: {other}")),
    }
}

fn new_boundary() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..32).map(|_| char::from_digit(rng.gen_range(0..16), 16).expect("a hex digit")).collect()
}

enum Stage {
    Head(Field<'static>),
    Body(Field<'static>),
    Next,
    Done,
}

/// The parts of `multipart`, starting with `first`, framed with `boundary` in the daemon's shape.
fn reencode(
    first: Field<'static>,
    multipart: Multipart<'static>,
    boundary: String,
) -> BoxStream<'static, std::result::Result<Bytes, std::io::Error>> {
    stream::unfold((Stage::Head(first), multipart), move |(stage, mut multipart)| {
        let boundary = boundary.clone();
        async move {
            let (item, next) = match stage {
                Stage::Head(field) => (Ok(part_head(&boundary, &field)), Stage::Body(field)),
                Stage::Body(mut field) => match field.chunk().await {
                    Ok(Some(chunk)) => (Ok(chunk), Stage::Body(field)),
                    Ok(None) => (Ok(Bytes::from_static(b"\r\n")), Stage::Next),
                    Err(err) => (Err(std::io::Error::other(err)), Stage::Done),
                },
                Stage::Next => match multipart.next_field().await {
                    Ok(Some(field)) => (Ok(part_head(&boundary, &field)), Stage::Body(field)),
                    Ok(None) => (Ok(Bytes::from(format!("--{boundary}--\r\n"))), Stage::Done),
                    Err(err) => (Err(std::io::Error::other(err)), Stage::Done),
                },
                Stage::Done => return None,
            };
            Some((item, (next, multipart)))
        }
    })
    .boxed()
}

/// The boundary line and headers of one part: `form-data; name="file"` whatever the client wrote,
/// the client's file name (paths inside it are how directories travel), its type and `Abspath`.
fn part_head(boundary: &str, field: &Field<'_>) -> Bytes {
    let name = field.name().filter(|n| !n.is_empty()).unwrap_or("file");
    let mut head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"", quote(name));
    if let Some(file_name) = field.file_name() {
        head.push_str(&format!("; filename=\"{}\"", quote(file_name)));
    }
    let content_type = field.content_type().map_or("application/octet-stream".to_string(), ToString::to_string);
    head.push_str(&format!("\r\nContent-Type: {content_type}\r\n"));
    if let Some(abspath) = field.headers().get("abspath").and_then(|v| v.to_str().ok()) {
        head.push_str(&format!("Abspath: {abspath}\r\n"));
    }
    head.push_str("\r\n");
    Bytes::from(head)
}

fn quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Re-encodes `body` (sent in `chunks`-sized pieces, as a chunked upload arrives) and parses
    /// the result back: (name, file name, content type, data) per part.
    async fn roundtrip(
        content_type: &str,
        body: &'static [u8],
        chunk: usize,
    ) -> std::result::Result<Vec<(String, Option<String>, String, Vec<u8>)>, multer::Error> {
        let pieces: Vec<std::result::Result<Bytes, std::io::Error>> =
            body.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let boundary = multer::parse_boundary(content_type)?;
        let mut incoming = Multipart::new(stream::iter(pieces), boundary);
        let first = incoming.next_field().await?.expect("one part");
        let encoded: Vec<u8> = reencode(first, incoming, "OURS".into())
            .try_fold(Vec::new(), |mut acc, b| async move {
                acc.extend_from_slice(&b);
                Ok(acc)
            })
            .await
            .map_err(|e| multer::Error::StreamReadFailed(Box::new(e)))?;
        let mut parsed = Multipart::new(stream::iter([Ok::<_, std::io::Error>(Bytes::from(encoded))]), "OURS");
        let mut parts = Vec::new();
        while let Some(field) = parsed.next_field().await? {
            let (name, file) = (field.name().unwrap_or("").to_string(), field.file_name().map(String::from));
            let ctype = field.content_type().map(ToString::to_string).unwrap_or_default();
            parts.push((name, file, ctype, field.bytes().await?.to_vec()));
        }
        Ok(parts)
    }

    #[tokio::test]
    async fn quoted_boundary_nameless_part_in_small_chunks() {
        let body =
            b"--b0undary\r\nContent-Disposition: file; filename=\"hello.txt\"\r\n\r\nhello world\r\n--b0undary--\r\n";
        let parts = roundtrip("multipart/form-data; boundary=\"b0undary\"", body, 3).await.unwrap();
        assert_eq!(
            parts,
            vec![("file".into(), Some("hello.txt".into()), "application/octet-stream".into(), b"hello world".to_vec())]
        );
    }

    #[tokio::test]
    async fn directories_keep_their_paths_types_and_order() {
        let body = b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dir\"\r\nContent-Type: application/x-directory\r\n\r\n\r\n--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dir%2Fa.txt\"\r\nContent-Type: text/plain\r\n\r\nA\r\n--X--\r\n";
        let parts = roundtrip("multipart/form-data; boundary=X", body, 1000).await.unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].2, "application/x-directory");
        assert_eq!(parts[1].1.as_deref(), Some("dir%2Fa.txt"));
        assert_eq!(parts[1].3, b"A");
    }

    #[tokio::test]
    async fn truncated_bodies_fail() {
        let body = b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nno end";
        assert!(roundtrip("multipart/form-data; boundary=X", body, 4).await.is_err());
    }

    #[test]
    fn add_params_split() {
        let q = Query::parse("cid-version=1&raw-leaves=true&name=site&replication=2&local=true&stream-channels=false&layout=trickle&unknown=1");
        let p = AddParams::from_query(&q).unwrap();
        assert!(p.options.local && !p.options.no_pin && !p.stream_channels);
        assert_eq!((p.options.pin.name.as_str(), p.options.pin.replication_factor_min), ("site", 2));
        let keys: Vec<&str> = p.daemon.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["cid-version", "raw-leaves", "trickle"]);
        assert_eq!(AddParams::from_query(&Query::parse("format=car")).unwrap().format, AddFormat::Car);
        assert!(AddParams::from_query(&Query::parse("format=car&wrap-with-directory=true")).is_err());
        assert!(AddParams::from_query(&Query::parse("format=zip")).is_err());
        assert!(AddParams::from_query(&Query::parse("no-pin=maybe")).is_err());
        assert!(AddParams::from_query(&Query::parse("replication-min=x")).is_err());
    }
}
