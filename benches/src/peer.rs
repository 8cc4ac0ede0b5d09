//! The peer under test: a real `Cluster` on a durable state in a temp dir, the fake IPFS, and the
//! real REST server on 127.0.0.1 (port 0). Also the large pinset fixture and its CIDs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use sidecar::api::RestApiConfig;
use sidecar::cluster::{Cluster, ClusterConfig, STATE_FILE};
use sidecar::identity::Identity;
use sidecar::ipfs::fake::{raw_block_cid, FakeIpfs};
use sidecar::p2p::P2pConfig;
use sidecar::state::{PinState, StateOp};
use sidecar::types::{Cid, Pin, PinMode, PinType};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::measure::{self, secs};

/// Warnings and errors of the peer go to stderr (or what `CLUSTER_BENCH_LOG` says, an `EnvFilter`
/// such as `info,sidecar::consensus=debug`); [`RebuildWatch`] sees the tracker's info events only.
/// Its filter matters for the figures: a layer without one enables every callsite of every level,
/// so each of openraft's debug and trace spans and events would be built on the hot path.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLUSTER_BENCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colours).with_filter(filter);
    let tracker_info = tracing_subscriber::filter::Targets::new().with_target("sidecar::tracker", tracing::Level::INFO);
    tracing_subscriber::registry().with(fmt).with(RebuildWatch.with_filter(tracker_info)).init();
}

/// When the tracker logged the end of a start-up rebuild ("rebuilt its queue"), in order.
static REBUILDS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

/// Start-up rebuilds seen so far.
pub fn rebuilds_seen() -> usize {
    REBUILDS.lock().expect("rebuild list").len()
}

/// Waits for rebuild number `n` (1-based) and returns when it ended.
pub async fn wait_rebuild(n: usize, timeout: Duration) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        if let Some(at) = REBUILDS.lock().expect("rebuild list").get(n - 1) {
            return Ok(*at);
        }
        anyhow::ensure!(started.elapsed() < timeout, "no tracker rebuild log event after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A tracing layer that notes the tracker's "rebuilt its queue" events in [`REBUILDS`].
struct RebuildWatch;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RebuildWatch {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}").contains("rebuilt its queue") {
                    self.0 = true;
                }
            }
        }
        if event.metadata().target().starts_with("sidecar::tracker") {
            let mut message = Message(false);
            event.record(&mut message);
            if message.0 {
                REBUILDS.lock().expect("rebuild list").push(Instant::now());
            }
        }
    }
}

/// The server's runtime: as many workers as cores, every thread named `server`.
pub fn server_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().thread_name("server").enable_all().build()?)
}

/// A peer's settings: defaults, with its cluster host on 127.0.0.1 (any port) under a fresh secret.
pub fn config(peername: &str) -> ClusterConfig {
    let mut p2p = P2pConfig::new(rand::random());
    p2p.listen = "/ip4/127.0.0.1/tcp/0".parse().expect("valid address");
    ClusterConfig::new(peername, p2p)
}

/// A running peer with its REST API.
pub struct Peer {
    pub cluster: Cluster,
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
}

impl Peer {
    /// Starts the cluster on `data_dir` and serves the REST API on 127.0.0.1, port 0.
    pub async fn start(data_dir: &Path, ipfs: Arc<FakeIpfs>) -> anyhow::Result<Peer> {
        Peer::start_with(config("bench"), Identity::generate(), data_dir, ipfs).await
    }

    /// [`Peer::start`] with these settings and identity.
    pub async fn start_with(
        config: ClusterConfig,
        identity: Identity,
        data_dir: &Path,
        ipfs: Arc<FakeIpfs>,
    ) -> anyhow::Result<Peer> {
        let cluster = Cluster::start(config, identity, ipfs, data_dir).await?;
        let shutdown = CancellationToken::new();
        let config =
            RestApiConfig { http_listen_multiaddress: "/ip4/127.0.0.1/tcp/0".parse()?, ..RestApiConfig::default() };
        let (addr, server) = sidecar::api::serve(cluster.clone(), config, shutdown.clone().cancelled_owned()).await?;
        Ok(Peer { cluster, addr, shutdown, server })
    }

    /// Stops the REST server (clients must have closed their connections) and the cluster.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.cluster.shutdown().await;
    }
}

/// A gauge or counter of the peer's Prometheus text (`cluster_<name>`).
pub fn metric(cluster: &Cluster, name: &str) -> Option<u64> {
    parse_metric(&cluster.prometheus(), name)
}

/// A gauge or counter (`cluster_<name>`, or `cluster_<name>_total`) of a Prometheus text
/// exposition (`Cluster::prometheus()`, `GET /metrics`).
pub fn parse_metric(text: &str, name: &str) -> Option<u64> {
    let full = format!("cluster_{name}");
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == full || key == format!("{full}_total")).then(|| value.trim().parse::<f64>().ok().map(|v| v as u64))?
    })
}

/// The tracker knows the daemon holds all `pins` and has nothing queued or running: every pin of
/// the pinset reads `pinned`.
pub fn all_pinned(cluster: &Cluster, pins: u64) -> bool {
    metric(cluster, "ipfs_pins") == Some(pins)
        && metric(cluster, "tracker_queued") == Some(0)
        && metric(cluster, "tracker_in_progress") == Some(0)
}

/// Polls [`all_pinned`] every 5 ms; the time it took, or an error after `timeout`.
pub async fn wait_all_pinned(cluster: &Cluster, pins: u64, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !all_pinned(cluster, pins) {
        if started.elapsed() > timeout {
            anyhow::bail!(
                "after {timeout:?} the tracker still does not see {pins} pins pinned: {}",
                cluster.prometheus().lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

/// The CID of pin number `i` of a fixture made with `seed`: sha2-256, raw codec, CIDv1.
pub fn fixture_cid(seed: u64, i: u64) -> Cid {
    let mut data = [0u8; 16];
    data[..8].copy_from_slice(&seed.to_be_bytes());
    data[8..].copy_from_slice(&i.to_be_bytes());
    raw_block_cid(&data)
}

/// A pin as `ipfs-cluster-ctl pin add --name ... <cid>` makes it with the default replication.
pub fn realistic_pin(cid: Cid, i: u64) -> Pin {
    Pin {
        replication_factor_min: -1,
        replication_factor_max: -1,
        name: format!("dataset-{:03}/file-{i:07}.bin", i % 1000),
        mode: PinMode::Recursive,
        shard_size: 0,
        user_allocations: Vec::new(),
        expire_at: None,
        metadata: BTreeMap::new(),
        pin_update: None,
        origins: Vec::new(),
        cid,
        pin_type: PinType::Data,
        allocations: Vec::new(),
        max_depth: -1,
        reference: None,
        timestamp: Utc::now(),
    }
}

/// A fake daemon that already holds the fixture's pins, as the real one would.
pub fn fake_with_pins(seed: u64, pins: u64) -> FakeIpfs {
    let ipfs = FakeIpfs::new();
    for i in 0..pins {
        ipfs.add_pin_behind_back(&fixture_cid(seed, i), PinMode::Recursive);
    }
    ipfs
}

/// [`realistic_pin`] allocated to `holder` only (replication 1), as the allocator makes it when
/// that peer is the pin's one holder.
pub fn pin_allocated_to(holder: &Identity, cid: Cid, i: u64) -> Pin {
    Pin {
        replication_factor_min: 1,
        replication_factor_max: 1,
        allocations: vec![holder.peer_id],
        ..realistic_pin(cid, i)
    }
}

/// A data directory whose state holds `pins` pins, built once and shared by `startup` and `stream`
/// (and, allocated to one peer, the first peer's directory in `catch-up`).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub seed: u64,
    pub pins: u64,
}

impl Fixture {
    /// `--pins` pins of the default replication (everywhere, no allocations) in a new temp dir.
    pub fn build(args: &crate::Args) -> anyhow::Result<Fixture> {
        Fixture::build_in(args.temp_dir("cluster-bench-state-")?, args.pins, None)
    }

    /// `pins` pins into the state of `dir`; allocated to `holder` only when given.
    pub fn build_in(dir: tempfile::TempDir, pins: u64, holder: Option<&Identity>) -> anyhow::Result<Fixture> {
        const BATCH: u64 = 10_000;
        let seed = rand::random::<u64>();
        let whose = holder.map(|h| format!(", allocated to {} only", h.peer_id)).unwrap_or_default();
        println!("== fixture: {pins} pins into {}{whose} ({})", dir.path().display(), measure::load_line());
        let make = |n: u64| match holder {
            Some(peer) => pin_allocated_to(peer, fixture_cid(seed, n), n),
            None => realistic_pin(fixture_cid(seed, n), n),
        };
        let started = Instant::now();
        let path = dir.path().join(STATE_FILE);
        let state = PinState::open(&path)?;
        let mut i = 0;
        while i < pins {
            let ops: Vec<StateOp> = (i..(i + BATCH).min(pins)).map(|n| StateOp::Pin(make(n))).collect();
            state.apply(&ops).context("bulk loading the state")?;
            i += ops.len() as u64;
        }
        anyhow::ensure!(state.len()? == pins, "the state holds {} pins, not {pins}", state.len()?);
        drop(state);
        let took = started.elapsed();
        let size = std::fs::metadata(&path)?.len();
        println!(
            "   built in {:.1} s ({:.0} pins/s, batches of {BATCH}, one fsync each); file {:.0} MiB",
            took.as_secs_f64(),
            pins as f64 / took.as_secs_f64(),
            size as f64 / (1 << 20) as f64
        );
        measure::emit(serde_json::json!({
            "scenario": "fixture", "pins": pins, "build_s": secs(took),
            "pins_per_s": (pins as f64 / took.as_secs_f64()).round(), "file_mib": (size >> 20),
        }));
        Ok(Fixture { dir, seed, pins })
    }
}
