//! Reading response bodies: NDJSON line by line, and the `X-Stream-Error` trailer through which
//! the daemon reports an error that happened after it sent `200 OK`.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Body;
use serde::de::DeserializeOwned;

use super::rpc::ErrorEnvelope;
use crate::{Error, Result};

const STREAM_ERROR_TRAILER: &str = "x-stream-error";

/// The error a daemon reported in the trailers of a streamed response, if any. Kubo sends the bare
/// message, js-ipfs its JSON error envelope: accept both.
pub(super) fn stream_error(trailers: &HeaderMap) -> Option<Error> {
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
    Some(Error::Ipfs(message))
}

/// Reads a response body as newline-delimited JSON, one value at a time, without holding more than
/// the current line in memory. The end of the stream is only reported once the trailers have been
/// checked, so a stream cut short by a daemon-side error never looks complete.
pub(super) struct NdjsonReader<B> {
    body: B,
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
    pub(super) fn new(body: B) -> Self {
        NdjsonReader { body, buffer: BytesMut::new(), scanned: 0, finished: false }
    }

    /// The next non-empty line (without its newline), or `None` at the end of a clean stream.
    pub(super) async fn next_line(&mut self) -> Result<Option<Bytes>> {
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
    pub(super) async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.next_line().await? {
            Some(line) => decode_line(&line).map(Some),
            None => Ok(None),
        }
    }

    async fn read_frame(&mut self) -> Result<()> {
        match self.body.frame().await {
            None => self.finished = true,
            Some(Err(e)) => return Err(Error::Ipfs(format!("reading the daemon's response: {e}"))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.buffer.extend_from_slice(&data),
                Err(frame) => {
                    if let Some(error) = frame.trailers_ref().and_then(stream_error) {
                        return Err(error);
                    }
                }
            },
        }
        Ok(())
    }
}

/// Reads a whole (small) response body, failing on an `X-Stream-Error` trailer.
pub(super) async fn read_to_end<B>(mut body: B) -> Result<Bytes>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Ipfs(format!("reading the daemon's response: {e}")))?;
        match frame.into_data() {
            Ok(data) => buffer.extend_from_slice(&data),
            Err(frame) => {
                if let Some(error) = frame.trailers_ref().and_then(stream_error) {
                    return Err(error);
                }
            }
        }
    }
    Ok(buffer.freeze())
}

pub(super) fn decode_line<T: DeserializeOwned>(line: &[u8]) -> Result<T> {
    serde_json::from_slice(line).map_err(|e| {
        let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        Error::Ipfs(format!("unexpected response from the daemon ({e}): {shown}"))
    })
}

#[cfg(test)]
pub(super) mod tests {
    use std::convert::Infallible;

    use futures::stream;
    use http::HeaderValue;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use serde::Deserialize;

    use super::*;

    /// A body delivered in the given chunks, optionally followed by trailers.
    pub(crate) fn body_of(
        chunks: Vec<&'static str>,
        trailers: Option<HeaderMap>,
    ) -> StreamBody<impl futures::Stream<Item = std::result::Result<Frame<Bytes>, Infallible>> + Unpin> {
        let data = chunks.into_iter().map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))));
        let trailers = trailers.into_iter().map(|t| Ok(Frame::trailers(t)));
        StreamBody::new(stream::iter(data.chain(trailers).collect::<Vec<_>>()))
    }

    fn trailer(value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("X-Stream-Error", HeaderValue::from_static(value));
        map
    }

    #[derive(Debug, Deserialize, PartialEq)]
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
        assert_eq!(collect(&mut NdjsonReader::new(body)).await.unwrap(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn stream_error_trailer_fails_the_stream_after_its_lines() {
        let body = body_of(vec!["{\"n\":1}\n"], Some(trailer(r#"{"Message":"path 'x' is not pinned","Code":0}"#)));
        let mut reader = NdjsonReader::new(body);
        assert_eq!(reader.next::<Line>().await.unwrap(), Some(Line { n: 1 }));
        let err = reader.next::<Line>().await.unwrap_err();
        assert!(matches!(&err, Error::Ipfs(m) if m == "path 'x' is not pinned"), "{err:?}");
    }

    #[tokio::test]
    async fn kubo_plain_text_trailer_and_empty_trailer() {
        let body = body_of(vec![], Some(trailer("context canceled")));
        let err = collect(&mut NdjsonReader::new(body)).await.unwrap_err();
        assert!(matches!(&err, Error::Ipfs(m) if m == "context canceled"), "{err:?}");

        let body = body_of(vec!["{\"n\":7}\n"], Some(trailer("")));
        assert_eq!(collect(&mut NdjsonReader::new(body)).await.unwrap(), vec![7]);
    }

    #[tokio::test]
    async fn malformed_line_is_an_ipfs_error() {
        let body = body_of(vec!["<html>\n"], None);
        let err = collect(&mut NdjsonReader::new(body)).await.unwrap_err();
        assert!(matches!(&err, Error::Ipfs(m) if m.contains("<html>")), "{err:?}");
    }

    #[tokio::test]
    async fn read_to_end_checks_trailers() {
        let body = body_of(vec!["{\"a\":", "1}"], None);
        assert_eq!(read_to_end(body).await.unwrap(), Bytes::from_static(b"{\"a\":1}"));
        let body = body_of(vec!["{}"], Some(trailer("boom")));
        assert!(matches!(read_to_end(body).await, Err(Error::Ipfs(m)) if m == "boom"));
    }
}
