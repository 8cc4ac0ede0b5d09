//! Reading a streaming response: NDJSON lines as they arrive, then the `X-Stream-Error` trailer,
//! which turns a stream that ended early into an error instead of a silently short list.

use bytes::{Buf, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::error_from_message;
use crate::{Error, Result};

struct State {
    body: Incoming,
    buffer: BytesMut,
    trailer_error: Option<String>,
    finished: bool,
}

/// Items of an NDJSON body; a non-empty `X-Stream-Error` trailer becomes the last item, an error.
pub(crate) fn items<T: DeserializeOwned + Send + 'static>(body: Incoming) -> BoxStream<'static, Result<T>> {
    let state = State { body, buffer: BytesMut::new(), trailer_error: None, finished: false };
    stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            if let Some(line) = next_line(&mut state.buffer, state.finished) {
                let item = serde_json::from_slice::<T>(&line)
                    .map_err(|e| Error::BadRequest(format!("malformed stream item from the server: {e}")));
                return Some((item, Some(state)));
            }
            if state.finished {
                let error = state.trailer_error.take()?;
                return Some((Err(error_from_message(500, error)), None));
            }
            match state.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => state.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        let message = frame
                            .trailers_ref()
                            .and_then(|t| t.get("x-stream-error"))
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        if !message.is_empty() {
                            state.trailer_error = Some(message.to_string());
                        }
                    }
                },
                Some(Err(e)) => {
                    return Some((Err(Error::Io(std::io::Error::other(format!("reading stream: {e}")))), None))
                }
                None => state.finished = true,
            }
        }
    })
    .boxed()
}

/// The next non-empty line; at the end of the body, whatever is left.
fn next_line(buffer: &mut BytesMut, at_end: bool) -> Option<BytesMut> {
    loop {
        let line = match buffer.iter().position(|b| *b == b'\n') {
            Some(i) => {
                let line = buffer.split_to(i);
                buffer.advance(1);
                line
            }
            None if at_end && !buffer.is_empty() => buffer.split(),
            None => return None,
        };
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Some(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_and_blank_lines() {
        let mut buffer = BytesMut::from(&b"{\"a\":1}\n\n{\"a\""[..]);
        assert_eq!(&next_line(&mut buffer, false).unwrap()[..], b"{\"a\":1}");
        assert!(next_line(&mut buffer, false).is_none());
        buffer.extend_from_slice(b":2}");
        assert_eq!(&next_line(&mut buffer, true).unwrap()[..], b"{\"a\":2}");
        assert!(next_line(&mut buffer, true).is_none());
    }
}
