//! Bytes the host's RPC streams carried, per libp2p protocol: what the reference reports on
//! `GET /health/bandwidth` (from its libp2p bandwidth counter).
//!
//! Counted in the request-response codec and in the lanes' frames, so only the protocols' own bytes
//! count (not noise, yamux or the private network's framing). Rates are averages between two readings at least a
//! second apart, where the reference keeps a moving average: close enough for an operator's view.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use libp2p::request_response::Codec;

use crate::types::{Bandwidth, BandwidthByProtocol};

/// Readings closer together than this keep the previous rates.
const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);

/// The counter every stream adds to; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct BandwidthMeter(Arc<Mutex<Meter>>);

/// Bytes (in, out) per protocol.
type Totals = BTreeMap<String, (u64, u64)>;

#[derive(Debug, Default)]
struct Meter {
    totals: Totals,
    /// The last reading that set the rates: when, and the totals then.
    last: Option<(Instant, Totals)>,
    /// Bytes per second (in, out) between the last two such readings.
    rates: BTreeMap<String, (f64, f64)>,
}

impl BandwidthMeter {
    fn lock(&self) -> MutexGuard<'_, Meter> {
        // Counters stay meaningful after a panic elsewhere: keep counting.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn add(&self, protocol: &str, bytes_in: u64, bytes_out: u64) {
        let mut meter = self.lock();
        // Every RPC message passes here: allocate the protocol's name only the first time.
        match meter.totals.get_mut(protocol) {
            Some(totals) => *totals = (totals.0 + bytes_in, totals.1 + bytes_out),
            None => {
                meter.totals.insert(protocol.to_string(), (bytes_in, bytes_out));
            }
        }
    }

    /// The totals so far and the rates since the previous reading.
    pub fn by_protocol(&self) -> BandwidthByProtocol {
        self.reading(Instant::now())
    }

    fn reading(&self, now: Instant) -> BandwidthByProtocol {
        let mut meter = self.lock();
        let window = meter.last.as_ref().map(|(at, _)| now.saturating_duration_since(*at));
        if window.is_none_or(|w| w >= MIN_RATE_WINDOW) {
            if let (Some((_, before)), Some(window)) = (&meter.last, window) {
                let secs = window.as_secs_f64();
                let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
                meter.rates = meter
                    .totals
                    .iter()
                    .map(|(p, &(i, o))| {
                        let (bi, bo) = before.get(p).copied().unwrap_or_default();
                        (p.clone(), (rate(i, bi), rate(o, bo)))
                    })
                    .collect();
            }
            meter.last = Some((now, meter.totals.clone()));
        }
        meter
            .totals
            .iter()
            .map(|(p, &(total_in, total_out))| {
                let (rate_in, rate_out) = meter.rates.get(p).copied().unwrap_or_default();
                (p.clone(), Bandwidth { total_in, total_out, rate_in, rate_out })
            })
            .collect()
    }
}

/// A request-response codec that counts what `C` reads and writes, per protocol.
#[derive(Clone)]
pub(crate) struct Counting<C> {
    pub codec: C,
    pub meter: BandwidthMeter,
}

impl<C> Codec for Counting<C>
where
    C: Codec + Send + Clone,
    C::Protocol: Sync,
{
    type Protocol = C::Protocol;
    type Request = C::Request;
    type Response = C::Response;

    async fn read_request<T>(&mut self, protocol: &Self::Protocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut io = Counted::new(io);
        let request = self.codec.read_request(protocol, &mut io).await;
        self.meter.add(protocol.as_ref(), io.bytes, 0);
        request
    }

    async fn read_response<T>(&mut self, protocol: &Self::Protocol, io: &mut T) -> io::Result<Self::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut io = Counted::new(io);
        let response = self.codec.read_response(protocol, &mut io).await;
        self.meter.add(protocol.as_ref(), io.bytes, 0);
        response
    }

    async fn write_request<T>(&mut self, protocol: &Self::Protocol, io: &mut T, req: Self::Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let mut io = Counted::new(io);
        let written = self.codec.write_request(protocol, &mut io, req).await;
        self.meter.add(protocol.as_ref(), 0, io.bytes);
        written
    }

    async fn write_response<T>(&mut self, protocol: &Self::Protocol, io: &mut T, res: Self::Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let mut io = Counted::new(io);
        let written = self.codec.write_response(protocol, &mut io, res).await;
        self.meter.add(protocol.as_ref(), 0, io.bytes);
        written
    }
}

/// A stream that counts the bytes read from or written to it.
struct Counted<'a, T> {
    inner: &'a mut T,
    bytes: u64,
}

impl<'a, T> Counted<'a, T> {
    fn new(inner: &'a mut T) -> Self {
        Counted { inner, bytes: 0 }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.bytes += n as u64;
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.bytes += n as u64;
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_at_once_and_rates_over_a_second_or_more() {
        let meter = BandwidthMeter::default();
        let start = Instant::now();
        meter.add("/rpc", 100, 10);
        let first = meter.reading(start);
        assert_eq!(first["/rpc"], Bandwidth { total_in: 100, total_out: 10, rate_in: 0.0, rate_out: 0.0 });
        meter.add("/rpc", 400, 40);
        meter.add("/other", 0, 7);
        // Too soon: totals move, rates do not.
        let soon = meter.reading(start + Duration::from_millis(200));
        assert_eq!((soon["/rpc"].total_in, soon["/rpc"].rate_in), (500, 0.0));
        let later = meter.reading(start + Duration::from_secs(2));
        assert_eq!(later["/rpc"], Bandwidth { total_in: 500, total_out: 50, rate_in: 200.0, rate_out: 20.0 });
        assert_eq!(later["/other"].rate_out, 3.5);
        let idle = meter.reading(start + Duration::from_secs(4));
        assert_eq!((idle["/rpc"].total_in, idle["/rpc"].rate_in), (500, 0.0));
    }

    #[tokio::test]
    async fn the_codec_counts_both_directions() {
        use futures::io::Cursor;
        type Cbor = libp2p::request_response::cbor::codec::Codec<String, String>;
        let meter = BandwidthMeter::default();
        let mut codec = Counting { codec: Cbor::default(), meter: meter.clone() };
        let protocol = libp2p::StreamProtocol::new("/test/1");
        let mut wire = Cursor::new(Vec::new());
        codec.write_request(&protocol, &mut wire, "hello".to_string()).await.unwrap();
        let written = wire.get_ref().len() as u64;
        wire.set_position(0);
        assert_eq!(codec.read_request(&protocol, &mut wire).await.unwrap(), "hello");
        let counted = meter.by_protocol()["/test/1"];
        assert_eq!((counted.total_in, counted.total_out), (written, written));
    }
}
