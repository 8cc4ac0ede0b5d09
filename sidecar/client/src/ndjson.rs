//! Reading streamed HTTP responses: NDJSON line by line, and the `X-Stream-Error` trailer through
//! which a server (an IPFS daemon, or a cluster peer) reports an error that happened after it sent
//! `200 OK`. Both the peer's IPFS connector and the REST client read their streams through this.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Body;
use serde::de::DeserializeOwned;

use futures::stream::{self, BoxStream};
use serde::Deserialize;

use crate::{Error, Result};

const STREAM_ERROR_TRAILER: &str = "x-stream-error";

/// Most bytes of one NDJSON line, and of a body read whole: past it the server is broken or
/// hostile, and reading on would only grow memory. A line is one value (a pin's status across
/// every peer, a progress report), a body read whole a short answer (an ID, the swarm's peers):
/// the largest, with thousands of peers, take a few MB. The same bound as a message between
/// peers (`p2p`).
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

fn too_long(source: Source) -> Error {
    (source.error)(format!("{} sent a line or body longer than {MAX_LINE_BYTES} bytes", source.name))
}

/// The server at the other end: how messages name it, and which error its failures become.
#[derive(Clone, Copy)]
pub struct Source {
    /// The server as messages name it (`the IPFS daemon`).
    pub name: &'static str,
    /// Makes the error for a failure the server reported, or for a response that makes no sense.
    pub error: fn(String) -> Error,
}

/// An IPFS daemon's RPC API: its failures are [`Error::Ipfs`].
pub const IPFS_DAEMON: Source = Source { name: "the IPFS daemon", error: Error::Ipfs };

/// The error envelope of the Kubo RPC API (`{"Message","Code","Type"}`), also seen in trailers.
#[derive(Debug, Deserialize)]
pub struct ErrorEnvelope {
    /// What went wrong, in the daemon's words.
    #[serde(rename = "Message")]
    pub message: String,
}

/// The error a server reported in the trailers of a streamed response, if any. Kubo sends the bare
/// message, js-ipfs its JSON error envelope: accept both.
fn stream_error(trailers: &HeaderMap, source: Source) -> Option<Error> {
    let value = trailers.get(STREAM_ERROR_TRAILER)?;
    let text = String::from_utf8_lossy(value.as_bytes());
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let message = match serde_json::from_str::<ErrorEnvelope>(text) {
        Ok(envelope) => envelope.message,
        Err(_) => text.to_string(),
    };
    Some((source.error)(message))
}

/// Reads a response body as newline-delimited JSON, one value at a time, without holding more than
/// the current line in memory. The end of the stream is only reported once the trailers have been
/// checked, so a stream cut short by a daemon-side error never looks complete.
pub struct NdjsonReader<B> {
    body: B,
    source: Source,
    buffer: BytesMut,
    /// How much of `buffer` is known to hold no newline (a long line arriving in many frames is
    /// then scanned once, not once per frame).
    scanned: usize,
    finished: bool,
}

impl<B> NdjsonReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// Reads `body`, a response of `source`.
    pub fn new(body: B, source: Source) -> Self {
        NdjsonReader { body, source, buffer: BytesMut::new(), scanned: 0, finished: false }
    }

    /// The next non-empty line (without its newline), or `None` at the end of a clean stream.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(offset) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
                let mut line = self.buffer.split_to(self.scanned + offset + 1);
                self.scanned = 0;
                line.truncate(line.len() - 1);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line.freeze()));
            }
            self.scanned = self.buffer.len();
            if self.buffer.len() > MAX_LINE_BYTES {
                return Err(too_long(self.source));
            }
            if self.finished {
                // The last line may lack its newline.
                let rest = self.buffer.split().freeze();
                self.scanned = 0;
                return Ok((!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest));
            }
            self.read_frame().await?;
        }
    }

    /// The next line decoded as `T`, or `None` at the end of a clean stream.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.next_line().await? {
            Some(line) => decode_line(&line, self.source).map(Some),
            None => Ok(None),
        }
    }

    /// The decoded items as a stream that ends after the first error.
    pub fn into_stream<T>(self) -> BoxStream<'static, Result<T>>
    where
        T: DeserializeOwned + Send + 'static,
        B: Send + 'static,
    {
        Box::pin(stream::try_unfold(self, |mut reader| async move {
            Ok(reader.next::<T>().await?.map(|item| (item, reader)))
        }))
    }

    async fn read_frame(&mut self) -> Result<()> {
        match self.body.frame().await {
            None => self.finished = true,
            Some(Err(e)) => {
                return Err((self.source.error)(format!("reading the response of {}: {e}", self.source.name)))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.buffer.extend_from_slice(&data),
                Err(frame) => {
                    if let Some(error) = frame.trailers_ref().and_then(|t| stream_error(t, self.source)) {
                        return Err(error);
                    }
                }
            },
        }
        Ok(())
    }
}

/// Reads a whole (small) response body, failing on an `X-Stream-Error` trailer, or past
/// [`MAX_LINE_BYTES`].
pub async fn read_to_end<B>(mut body: B, source: Source) -> Result<Bytes>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| (source.error)(format!("reading the response of {}: {e}", source.name)))?;
        match frame.into_data() {
            Ok(data) if buffer.len() + data.len() > MAX_LINE_BYTES => return Err(too_long(source)),
            Ok(data) => buffer.extend_from_slice(&data),
            Err(frame) => {
                if let Some(error) = frame.trailers_ref().and_then(|t| stream_error(t, source)) {
                    return Err(error);
                }
            }
        }
    }
    Ok(buffer.freeze())
}

/// One line or body as `T`; one that is not is `source`'s error, showing the start of it.
pub fn decode_line<T: DeserializeOwned>(line: &[u8], source: Source) -> Result<T> {
    serde_json::from_slice(line).map_err(|e| {
        let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        (source.error)(format!("unexpected response from {} ({e}): {shown}", source.name))
    })
}

/// Response bodies for tests (the `fixtures` feature).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use std::convert::Infallible;

    use bytes::Bytes;
    use futures::stream;
    use http::HeaderMap;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    /// A body delivered in the given chunks, optionally followed by trailers.
    pub fn body_of(
        chunks: Vec<&'static str>,
        trailers: Option<HeaderMap>,
    ) -> StreamBody<impl futures::Stream<Item = std::result::Result<Frame<Bytes>, Infallible>> + Unpin> {
        let data = chunks.into_iter().map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))));
        let trailers = trailers.into_iter().map(|t| Ok(Frame::trailers(t)));
        StreamBody::new(stream::iter(data.chain(trailers).collect::<Vec<_>>()))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::fixtures::body_of;
    use super::*;
    use http::HeaderValue;

    fn trailer(value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("X-Stream-Error", HeaderValue::from_static(value));
        map
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Line {
        n: u32,
    }

    async fn collect(
        reader: &mut NdjsonReader<impl Body<Data = Bytes, Error = Infallible> + Unpin>,
    ) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        while let Some(Line { n }) = reader.next().await? {
            out.push(n);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn lines_split_across_frames_and_blank_lines() {
        let body = body_of(vec!["{\"n\":1}\n{\"n\"", ":2}\r\n\n", "{\"n\":", "3}"], None);
        assert_eq!(collect(&mut NdjsonReader::new(body, IPFS_DAEMON)).await.unwrap(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn stream_error_trailer_fails_the_stream_after_its_lines() {
        let body = body_of(vec!["{\"n\":1}\n"], Some(trailer(r#"{"Message":"path 'x' is not pinned","Code":0}"#)));
        let mut reader = NdjsonReader::new(body, IPFS_DAEMON);
        assert_eq!(reader.next::<Line>().await.unwrap(), Some(Line { n: 1 }));
        let err = reader.next::<Line>().await.unwrap_err();
        assert!(matches!(&err, Error::Ipfs(m) if m == "path 'x' is not pinned"), "{err:?}");
    }

    #[tokio::test]
    async fn kubo_plain_text_trailer_and_empty_trailer() {
        let body = body_of(vec![], Some(trailer("context canceled")));
        let err = collect(&mut NdjsonReader::new(body, IPFS_DAEMON)).await.unwrap_err();
        assert!(matches!(&err, Error::Ipfs(m) if m == "context canceled"), "{err:?}");

        let body = body_of(vec!["{\"n\":7}\n"], Some(trailer("")));
        assert_eq!(collect(&mut NdjsonReader::new(body, IPFS_DAEMON)).await.unwrap(), vec![7]);
    }

    #[tokio::test]
    async fn malformed_line_is_an_ipfs_error() {
        let body = body_of(vec!["<html>\n"], None);
        let err = collect(&mut NdjsonReader::new(body, IPFS_DAEMON)).await.unwrap_err();
        assert!(matches!(&err, Error::Ipfs(m) if m.contains("<html>")), "{err:?}");
    }

    #[tokio::test]
    async fn a_line_or_body_without_end_is_an_error_past_the_bound() {
        let mib: &'static str = Box::leak("x".repeat(1 << 20).into_boxed_str());
        let endless = || vec![mib; MAX_LINE_BYTES / mib.len() + 1];
        let err = NdjsonReader::new(body_of(endless(), None), IPFS_DAEMON).next_line().await.unwrap_err();
        assert!(matches!(&err, Error::Ipfs(m) if m.contains("longer than 16777216 bytes")), "{err:?}");
        let err = read_to_end(body_of(endless(), None), IPFS_DAEMON).await.unwrap_err();
        assert!(matches!(&err, Error::Ipfs(m) if m.contains("longer than 16777216 bytes")), "{err:?}");

        // Up to the bound, a line or a body is read.
        let at_the_bound = vec![mib; MAX_LINE_BYTES / mib.len()];
        assert_eq!(read_to_end(body_of(at_the_bound.clone(), None), IPFS_DAEMON).await.unwrap().len(), MAX_LINE_BYTES);
        let line = [at_the_bound, vec!["\n"]].concat();
        let line = NdjsonReader::new(body_of(line, None), IPFS_DAEMON).next_line().await.unwrap();
        assert_eq!(line.map(|l| l.len()), Some(MAX_LINE_BYTES));
    }

    #[tokio::test]
    async fn read_to_end_checks_trailers() {
        let body = body_of(vec!["{\"a\":", "1}"], None);
        assert_eq!(read_to_end(body, IPFS_DAEMON).await.unwrap(), Bytes::from_static(b"{\"a\":1}"));
        let body = body_of(vec!["{}"], Some(trailer("boom")));
        assert!(matches!(read_to_end(body, IPFS_DAEMON).await, Err(Error::Ipfs(m)) if m == "boom"));
    }
}
