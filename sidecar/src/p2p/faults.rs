//! Emulated network faults on one host's connections, for tests and benchmarks of consensus under
//! partitions and slow links on machines without the kernel's `netem` (these have none).
//!
//! A host given a [`NetFaults`] relays each TCP connection through a task that can
//! - *isolate* the host: nothing moves either way and nothing fails, as when its packets are
//!   dropped (connections stall, new ones never finish their handshake; what was sent meanwhile is
//!   delivered once healed, as TCP retransmits it);
//! - *delay* what reaches the host by a fixed time (as `netem delay` on its ingress).
//!
//! A host without one uses its sockets directly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// Read size of the relay, and the buffer between the relay and the host's side of a connection.
const CHUNK: usize = 64 * 1024;

/// The faults of one host; clones control the same host.
#[derive(Clone, Debug)]
pub struct NetFaults(Arc<Faults>);

#[derive(Debug)]
struct Faults {
    isolated: watch::Sender<bool>,
    inbound_delay_micros: AtomicU64,
}

impl Default for NetFaults {
    fn default() -> Self {
        NetFaults(Arc::new(Faults { isolated: watch::Sender::new(false), inbound_delay_micros: AtomicU64::new(0) }))
    }
}

impl NetFaults {
    /// Cuts the host off (`true`) or heals it (`false`).
    pub fn isolate(&self, isolated: bool) {
        self.0.isolated.send_replace(isolated);
    }

    /// Delays every byte that reaches the host by `delay` (zero: none).
    pub fn delay_inbound(&self, delay: Duration) {
        self.0.inbound_delay_micros.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    fn inbound_delay(&self) -> Duration {
        Duration::from_micros(self.0.inbound_delay_micros.load(Ordering::Relaxed))
    }

    /// Waits until the host is not isolated.
    async fn reachable(&self) {
        let mut isolated = self.0.isolated.subscribe();
        let _ = isolated.wait_for(|isolated| !isolated).await;
    }

    /// The host's side of `socket`: a stream relayed through the faults.
    pub(crate) fn relay(&self, socket: TcpStream) -> Compat<DuplexStream> {
        let (host_side, relay_side) = tokio::io::duplex(CHUNK);
        tokio::spawn(relay(self.clone(), socket, relay_side));
        host_side.compat()
    }
}

/// Moves bytes between the network and the host until either side closes.
async fn relay(faults: NetFaults, socket: TcpStream, host: DuplexStream) {
    let (mut from_network, mut to_network) = socket.into_split();
    let (mut from_host, mut to_host) = tokio::io::split(host);
    let outbound = async {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = from_host.read(&mut buffer).await?;
            if n == 0 {
                return to_network.shutdown().await;
            }
            faults.reachable().await;
            to_network.write_all(&buffer[..n]).await?;
        }
    };
    let inbound = async {
        // Bytes read from the network and the time each chunk may reach the host.
        let mut in_transit: VecDeque<(Instant, Bytes)> = VecDeque::new();
        let mut buffer = vec![0u8; CHUNK];
        let mut open = true;
        loop {
            let due = in_transit.front().map(|(at, _)| *at);
            tokio::select! {
                read = from_network.read(&mut buffer), if open && in_transit.len() < 64 => {
                    let n = read?;
                    if n == 0 {
                        open = false;
                    } else {
                        faults.reachable().await;
                        in_transit.push_back((Instant::now() + faults.inbound_delay(), Bytes::copy_from_slice(&buffer[..n])));
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    if let Some((_, chunk)) = in_transit.pop_front() {
                        faults.reachable().await;
                        to_host.write_all(&chunk).await?;
                    }
                }
                else => return to_host.shutdown().await,
            }
        }
    };
    let outcome: std::io::Result<()> = tokio::select! {
        done = outbound => done,
        done = inbound => done,
    };
    if let Err(e) = outcome {
        tracing::trace!(error = %e, "a relayed connection ended");
    }
}
