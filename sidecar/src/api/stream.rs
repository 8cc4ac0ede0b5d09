//! Streaming responses as the reference sends them: NDJSON, one object per line, flushed per item,
//! with `Trailer: X-Stream-Error` and that trailer always sent at the end (empty when all went well).
//!
//! warp's body type cannot carry trailers, so the handler parks the real body in a response
//! extension ([`TrailerBody`]) and the outer service (`service.rs`) swaps it in.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use futures::FutureExt;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, TRAILER};
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use serde::Serialize;
use warp::reply::Response;

use super::error::{error_response, no_content, JSON};
use crate::Result;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type the server writes.
pub(crate) type ApiBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) const STREAM_ERROR: HeaderName = HeaderName::from_static("x-stream-error");

/// A body with trailers, travelling in the extensions of a warp response.
#[derive(Clone)]
pub(crate) struct TrailerBody(Arc<Mutex<Option<ApiBody>>>);

impl TrailerBody {
    pub(crate) fn take(&self) -> Option<ApiBody> {
        self.0.lock().expect("not poisoned").take()
    }
}

/// 200 + NDJSON when the stream has items; 204 when it is empty; 500 + error JSON when it fails
/// before the first item. A later failure ends the body and goes in the `X-Stream-Error` trailer.
pub(crate) async fn ndjson<T: Serialize + Send + 'static>(items: BoxStream<'static, Result<T>>) -> Response {
    respond(items, json_line).await
}

/// As [`ndjson`], for lines already written: each item is one or more whole lines, none empty. A
/// large item becomes a frame as it is, without a copy.
pub(crate) async fn ndjson_lines(chunks: BoxStream<'static, Result<Vec<u8>>>) -> Response {
    respond(chunks, |chunk, buffer| {
        if buffer.is_empty() {
            *buffer = chunk;
        } else {
            buffer.extend_from_slice(&chunk);
        }
        Ok(())
    })
    .await
}

/// How an item goes into the body: appended to the buffer, its newline included.
type Encode<T> = fn(T, &mut Vec<u8>) -> serde_json::Result<()>;

fn json_line<T: Serialize>(item: T, buffer: &mut Vec<u8>) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *buffer, &item)?;
    buffer.push(b'\n');
    Ok(())
}

async fn respond<T: Send + 'static>(mut items: BoxStream<'static, Result<T>>, encode: Encode<T>) -> Response {
    let mut resp = match items.next().await {
        None => no_content(),
        Some(Err(err)) => {
            tracing::warn!(error = %err, "stream failed before its first item");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
        }
        Some(Ok(first)) => {
            let items = stream::iter([Ok(first)]).chain(items).boxed();
            let body = StreamBody::new(frames(items, encode)).boxed_unsync();
            let mut resp = Response::new(Vec::<u8>::new().into());
            resp.headers_mut().insert(CONTENT_TYPE, JSON);
            resp.extensions_mut().insert(TrailerBody(Arc::new(Mutex::new(Some(body)))));
            resp
        }
    };
    resp.headers_mut().insert(TRAILER, HeaderValue::from_static("X-Stream-Error"));
    resp
}

/// Items that are ready together travel in one frame, up to this size: a line per chunk would cost
/// the client (and the server) far more than the bytes themselves on long listings.
const FRAME_TARGET: usize = 64 * 1024;

/// Where the body is: still reading items, or only the trailer (with its message) left to send.
enum Body<T> {
    Items(BoxStream<'static, Result<T>>),
    Trailer(String),
}

/// Data frames of NDJSON lines, then the trailer frame; nothing after an error. A frame holds the
/// next item plus whatever else is ready without waiting, so a slow producer's items still go out
/// as soon as each is made.
fn frames<T: Send + 'static>(
    items: BoxStream<'static, Result<T>>,
    encode: Encode<T>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send {
    stream::unfold(Some(Body::Items(items)), move |state| async move {
        let mut items = match state? {
            Body::Items(items) => items,
            Body::Trailer(message) => return Some((Ok(trailer(&message)), None)),
        };
        let mut buffer = Vec::new();
        let mut next = items.next().await;
        let ending = loop {
            match next {
                Some(Ok(item)) => {
                    if let Err(e) = encode(item, &mut buffer) {
                        break Some(format!("encoding stream item: {e}"));
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "stream failed mid-way");
                    break Some(err.to_string());
                }
                None => break Some(String::new()),
            }
            if buffer.len() >= FRAME_TARGET {
                break None;
            }
            match items.next().now_or_never() {
                Some(item) => next = item,
                None => break None,
            }
        };
        match (buffer.is_empty(), ending) {
            (true, Some(message)) => Some((Ok(trailer(&message)), None)),
            (false, Some(message)) => Some((Ok(Frame::data(Bytes::from(buffer))), Some(Body::Trailer(message)))),
            (_, None) => Some((Ok(Frame::data(Bytes::from(buffer))), Some(Body::Items(items)))),
        }
    })
}

/// For a client that cannot receive trailers: a failed stream breaks the connection instead of ending
/// cleanly (no last chunk), so the client sees an error rather than a short list that looks complete.
pub(crate) fn abort_on_stream_error(body: ApiBody) -> ApiBody {
    let frames = http_body_util::BodyStream::new(body).map(|frame| {
        let frame = frame?;
        let failure = frame.trailers_ref().and_then(|t| t.get(STREAM_ERROR)).filter(|message| !message.is_empty());
        match failure {
            Some(message) => Err(BoxError::from(String::from_utf8_lossy(message.as_bytes()).into_owned())),
            None => Ok(frame),
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

fn trailer(message: &str) -> Frame<Bytes> {
    let mut trailers = HeaderMap::new();
    // Header values cannot hold newlines; keep the message on one line.
    let value = HeaderValue::from_str(&message.replace(['\r', '\n'], " "))
        .unwrap_or_else(|_| HeaderValue::from_static("stream error (message not representable)"));
    trailers.insert(STREAM_ERROR, value);
    Frame::trailers(trailers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    async fn collect(resp: Response) -> (StatusCode, Vec<u8>, Option<HeaderMap>) {
        let status = resp.status();
        let body = resp.extensions().get::<TrailerBody>().and_then(TrailerBody::take);
        let Some(body) = body else {
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            return (status, bytes.to_vec(), None);
        };
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (status, collected.to_bytes().to_vec(), trailers)
    }

    #[tokio::test]
    async fn without_trailers_a_failure_breaks_the_body() {
        let items = stream::iter([Ok(1), Err(Error::Ipfs("daemon went away".into()))]).boxed();
        let resp = ndjson(items).await;
        let body = resp.extensions().get::<TrailerBody>().and_then(TrailerBody::take).unwrap();
        let err = abort_on_stream_error(body).collect().await.expect_err("the body fails");
        assert!(err.to_string().contains("daemon went away"), "{err}");

        let resp = ndjson(stream::iter([Ok(1)]).boxed()).await;
        let body = resp.extensions().get::<TrailerBody>().and_then(TrailerBody::take).unwrap();
        assert_eq!(abort_on_stream_error(body).collect().await.unwrap().to_bytes().as_ref(), b"1\n");
    }

    #[tokio::test]
    async fn items_become_lines_and_an_empty_trailer() {
        let resp = ndjson(stream::iter([Ok(1), Ok(2)]).boxed()).await;
        assert_eq!(resp.headers()[TRAILER], "X-Stream-Error");
        let (status, body, trailers) = collect(resp).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"1\n2\n");
        assert_eq!(trailers.unwrap()[STREAM_ERROR], "");
    }

    #[tokio::test]
    async fn written_lines_go_out_as_they_are() {
        let chunks = stream::iter([Ok(b"1\n2\n".to_vec()), Ok(b"3\n".to_vec())]).boxed();
        let (status, body, trailers) = collect(ndjson_lines(chunks).await).await;
        assert_eq!((status, body), (StatusCode::OK, b"1\n2\n3\n".to_vec()));
        assert_eq!(trailers.unwrap()[STREAM_ERROR], "");
    }

    #[tokio::test]
    async fn a_mid_stream_error_ends_the_body_and_fills_the_trailer() {
        let items = stream::iter([Ok(1), Err(Error::Ipfs("daemon went away".into())), Ok(3)]).boxed();
        let (status, body, trailers) = collect(ndjson(items).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"1\n");
        assert_eq!(trailers.unwrap()[STREAM_ERROR], "IPFS error: daemon went away");
    }

    #[tokio::test]
    async fn empty_is_204_and_early_error_is_500() {
        let (status, body, _) = collect(ndjson(stream::empty::<Result<u8>>().boxed()).await).await;
        assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
        let items = stream::iter([Err::<u8, _>(Error::Storage("cannot read".into()))]).boxed();
        let (status, body, _) = collect(ndjson(items).await).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json, serde_json::json!({"code": 500, "message": "state storage: cannot read"}));
    }
}
