//! The request body as the routes see it: bounded in bytes (`max_body_size`, whatever the framing,
//! chunked included) and in time (`read_timeout`), and drained when it is dropped unread.
//!
//! Draining matters because hyper closes a connection whose request body nobody reads, and a
//! client still uploading then gets a reset instead of the answer (a 401, a 413): Node's fetch
//! writes the whole upload before it reads. While the body is alive hyper keeps reading it, so a
//! task reads the rest (up to [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`]) and the answer arrives.
//!
//! A fault (too large, too slow, cut short) is recorded for the service, which answers with it
//! whatever the route made of the failed read (warp would try other routes and answer 405).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use warp::reply::Response;

use super::error::error_response;

/// At most this much of an unread body is read (and thrown away) after the answer; a longer
/// upload is cut off by closing the connection.
const DRAIN_LIMIT: u64 = 64 << 20;
/// At most this long is spent draining (less when `read_timeout` ends earlier).
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Why a request body could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BodyFault {
    TooLarge { limit: u64 },
    TooSlow { within: Duration },
    Broken(String),
}

impl fmt::Display for BodyFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyFault::TooLarge { limit } => write!(f, "request body exceeds {limit} bytes"),
            BodyFault::TooSlow { within } => {
                write!(f, "request body not received within {}", humantime::format_duration(*within))
            }
            BodyFault::Broken(error) => write!(f, "error reading request body: {error}"),
        }
    }
}

impl std::error::Error for BodyFault {}

impl BodyFault {
    fn status(&self) -> StatusCode {
        match self {
            BodyFault::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyFault::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyFault::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn response(&self) -> Response {
        error_response(self.status(), self.to_string())
    }

    /// The route label the answer is counted under.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            BodyFault::TooLarge { .. } => "too_large",
            BodyFault::TooSlow { .. } => "too_slow",
            BodyFault::Broken(_) => "bad_body",
        }
    }
}

/// The first fault of a request's body, shared between the body and the service.
pub(crate) type FaultSlot = Arc<OnceLock<BodyFault>>;

/// Limits on one request body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimits {
    /// `None`: no size limit.
    pub max_bytes: Option<u64>,
    /// `None`: no time limit.
    pub read_timeout: Option<Duration>,
}

pub(crate) struct RequestBody {
    /// `None` once the body has failed for good (a dropped connection, too slow).
    inner: Option<Incoming>,
    limits: BodyLimits,
    /// The client sent `Expect: 100-continue`: it uploads only once the body is first read.
    awaits_continue: bool,
    read: u64,
    deadline: Option<Pin<Box<Sleep>>>,
    fault: FaultSlot,
}

impl RequestBody {
    /// The deadline starts now, when the headers have been read.
    pub(crate) fn new(inner: Incoming, limits: BodyLimits, awaits_continue: bool) -> (Self, FaultSlot) {
        let fault = FaultSlot::default();
        let deadline = limits.read_timeout.map(|within| Box::pin(tokio::time::sleep(within)));
        let body = RequestBody { inner: Some(inner), limits, awaits_continue, read: 0, deadline, fault: fault.clone() };
        (body, fault)
    }

    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        // A slow client is not waited for again when draining; a broken body has nothing left.
        if !matches!(fault, BodyFault::TooLarge { .. }) {
            self.inner = None;
        }
        let _ = self.fault.set(fault.clone());
        Poll::Ready(Some(Err(fault)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let this = self.get_mut();
        if let Some(fault) = this.fault.get() {
            return Poll::Ready(Some(Err(fault.clone())));
        }
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        // Checked first, so that a client dripping bytes is cut off too.
        if let (Some(deadline), Some(within)) = (&mut this.deadline, this.limits.read_timeout) {
            if deadline.as_mut().poll(cx).is_ready() && !inner.is_end_stream() {
                return this.fail(BodyFault::TooSlow { within });
            }
        }
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                this.read += frame.data_ref().map_or(0, |data| data.len() as u64);
                match this.limits.max_bytes {
                    Some(limit) if this.read > limit => this.fail(BodyFault::TooLarge { limit }),
                    _ => Poll::Ready(Some(Ok(frame))),
                }
            }
            Some(Err(error)) => this.fail(BodyFault::Broken(error.to_string())),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else { return };
        // Nothing left, more declared than would be drained anyway, or nothing coming (reading would
        // ask for it with a `100 Continue`): hyper may close at once.
        let nothing_coming = self.awaits_continue && self.read == 0;
        if nothing_coming || inner.is_end_stream() || inner.size_hint().upper().is_some_and(|left| left > DRAIN_LIMIT) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let drain_until = Instant::now() + DRAIN_TIME;
        let until = self.deadline.as_ref().map_or(drain_until, |deadline| deadline.deadline().min(drain_until));
        runtime.spawn(drain(inner, until));
    }
}

/// Reads and discards the rest of a body, within [`DRAIN_LIMIT`] and `until`.
async fn drain(mut body: Incoming, until: Instant) {
    let discard = async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |data| data.remaining() as u64);
            if read > DRAIN_LIMIT {
                return;
            }
        }
    };
    if tokio::time::timeout_at(until, discard).await.is_err() {
        tracing::debug!("gave up draining a request body");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_has_its_status_and_message() {
        let cases = [
            (BodyFault::TooLarge { limit: 1024 }, 413, "request body exceeds 1024 bytes"),
            (BodyFault::TooSlow { within: Duration::from_secs(90) }, 408, "request body not received within 1m 30s"),
            (BodyFault::Broken("unexpected EOF".into()), 400, "error reading request body: unexpected EOF"),
        ];
        for (fault, status, message) in cases {
            assert_eq!((fault.status().as_u16(), fault.to_string().as_str()), (status, message));
        }
    }
}
