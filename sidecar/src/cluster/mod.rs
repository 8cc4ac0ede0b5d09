//! The peer as the REST API sees it: one handle over state, consensus, tracker, IPFS and monitor.
//!
//! Every REST endpoint maps to one method here. Methods with a `local` flag answer for this peer
//! only; the others answer for the whole cluster, gathering the other members' answers over RPC.

mod add;
mod background;
mod departure;
mod info;
mod listing;
mod metrics;
mod peers;
mod pins;
mod repin;
mod rpc;
#[cfg(test)]
mod tests;
mod vouch;

pub use listing::{PeerColumn, StatusSheet};

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::consensus::{Consensus, ConsensusConfig, StartFacts, StartPlan, REMOVED_MARKER};
use crate::identity::Identity;
use crate::ipfs::IpfsConnector;
use crate::monitor::Monitor;
use crate::p2p::P2pConfig;
use crate::protocol::Host;
use crate::state::PinState;
use crate::tracker::{PinTracker, TrackerConfig};
use crate::types::{IpfsId, PinOptions, PinType};
use crate::Result;

/// The file of the durable pinset inside the data directory.
pub const STATE_FILE: &str = "pinset.redb";

/// Which pin types `GET /allocations` lists (`filter=pin,meta-pin,...`; empty = all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinTypeFilter(pub Vec<PinType>);

impl PinTypeFilter {
    /// Parses `pin,meta-pin,clusterdag-pin,shard-pin,all`; unknown names are an error.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut types = Vec::new();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                return Ok(PinTypeFilter::default());
            }
            types.push(PinType::parse(name).ok_or_else(|| format!("unknown pin type filter: {name}"))?);
        }
        Ok(PinTypeFilter(types))
    }

    pub fn matches(&self, pin_type: PinType) -> bool {
        self.0.is_empty() || self.0.contains(&pin_type)
    }
}

/// Options of `POST /add` that are the cluster's (the rest go to the daemon's `add`).
#[derive(Clone, Debug, Default)]
pub struct AddOptions {
    pub pin: PinOptions,
    /// `no-pin`: import only.
    pub no_pin: bool,
    /// `local`: allocate the pin to this peer first (its daemon already holds the content).
    pub local: bool,
}

/// The settings the peer acts on (`service.json`'s `cluster` section and the pin tracker).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub peername: String,
    /// Defaults used when a pin asks for 0 (-1 = everywhere).
    pub replication_factor_min: i32,
    pub replication_factor_max: i32,
    /// How often the peer probes its daemon and publishes its metrics.
    pub monitor_ping_interval: Duration,
    /// How often expired pins are looked for and unpinned.
    pub expiry_check_interval: Duration,
    pub tracker: TrackerConfig,
    /// The libp2p host to other cluster peers.
    pub p2p: P2pConfig,
    pub consensus: ConsensusConfig,
    /// Re-allocate the pins of a peer whose metrics have been gone this long, so every pin keeps
    /// at least its minimum of live holders; `None` only raises the alert.
    pub repin_after: Option<Duration>,
}

impl ClusterConfig {
    /// Reference defaults: replicate everywhere, metrics every 15 s; re-allocation after 5 minutes
    /// without a peer (long enough for a restart or a pod reschedule, short enough that a lost
    /// peer does not leave pins under-replicated for long).
    pub fn new(peername: impl Into<String>, p2p: P2pConfig) -> Self {
        ClusterConfig {
            peername: peername.into(),
            replication_factor_min: -1,
            replication_factor_max: -1,
            monitor_ping_interval: Duration::from_secs(15),
            expiry_check_interval: Duration::from_secs(10),
            tracker: TrackerConfig::default(),
            p2p,
            consensus: ConsensusConfig::default(),
            repin_after: Some(Duration::from_secs(300)),
        }
    }
}

/// Handle to the running peer; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    identity: Identity,
    /// The peer ID's base58 text, which keys every `peer_map` (rendered once, not per pin).
    me: String,
    data_dir: PathBuf,
    state: Arc<PinState>,
    consensus: Consensus,
    tracker: PinTracker,
    ipfs: Arc<dyn IpfsConnector>,
    p2p: Host,
    monitor: Monitor,
    /// The daemon's identity from the last probe (with `error` set when it failed).
    ipfs_id: RwLock<IpfsId>,
    ipfs_up: AtomicBool,
    shutdown: CancellationToken,
    tasks: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// What the last re-allocation pass that moved everything it had to saw (see `repin`).
    last_repin: std::sync::Mutex<Option<std::collections::BTreeSet<String>>>,
    registry: std::sync::Mutex<prometheus_client::registry::Registry>,
    /// The operator declared that this pod only restarts (see `departure`).
    restart_declared: tokio::sync::watch::Sender<bool>,
    /// Until when the operator vouched for this peer's readiness without a leader (see `vouch`).
    vouched_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Cluster {
    /// Opens the durable state under `data_dir`, starts the libp2p host, consensus, the tracker,
    /// monitor and background tasks, then initialises, joins or waits as [`StartPlan`] says.
    pub async fn start(
        config: ClusterConfig,
        identity: Identity,
        ipfs: Arc<dyn IpfsConnector>,
        data_dir: &Path,
    ) -> Result<Cluster> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(STATE_FILE);
        let state = Arc::new(tokio::task::spawn_blocking(move || PinState::open(&path)).await.expect("open task")?);
        let tracker = PinTracker::new(config.tracker.clone(), identity.peer_id, ipfs.clone(), state.clone())?;
        let p2p = Host::start(identity.keypair.clone(), &config.p2p).await?;
        let consensus =
            Consensus::start(data_dir, state.clone(), Arc::new(tracker.clone()), p2p.clone(), config.consensus.clone())
                .await?;
        let cluster = Cluster {
            inner: Arc::new_cyclic(|weak| Inner {
                config,
                me: identity.peer_id.to_string(),
                identity,
                data_dir: data_dir.to_path_buf(),
                state,
                consensus,
                tracker,
                ipfs,
                p2p,
                monitor: Monitor::default(),
                ipfs_id: RwLock::new(IpfsId::default()),
                ipfs_up: AtomicBool::new(false),
                shutdown: CancellationToken::new(),
                tasks: tokio::sync::Mutex::new(Vec::new()),
                last_repin: std::sync::Mutex::new(None),
                registry: std::sync::Mutex::new(metrics::peer_registry(weak.clone())),
                restart_declared: tokio::sync::watch::Sender::new(false),
                vouched_until: std::sync::Mutex::new(None),
            }),
        };
        cluster.inner.p2p.serve(Arc::new(rpc::ClusterRpc(Arc::downgrade(&cluster.inner)))).await?;
        let tracker_task = cluster.inner.tracker.start(cluster.inner.shutdown.child_token());
        cluster.inner.tasks.lock().await.push(tracker_task);
        cluster.spawn_background_tasks().await;
        cluster.carry_out_start_plan().await?;
        Ok(cluster)
    }

    async fn carry_out_start_plan(&self) -> Result<()> {
        let consensus = &self.inner.consensus;
        let config = consensus.config();
        let facts = StartFacts {
            has_state: consensus.is_initialized().await,
            bootstrap: &config.bootstrap,
            auto_init: config.auto_init,
            was_removed: self.inner.data_dir.join(REMOVED_MARKER).exists(),
        };
        match crate::consensus::plan_start(&facts) {
            StartPlan::Resume => tracing::info!("resuming as a cluster member"),
            StartPlan::Initialize => consensus.initialize().await?,
            StartPlan::Join(bootstrap) => {
                // In the background: the REST API comes up meanwhile (not ready until joined).
                let cluster = self.clone();
                let task = tokio::spawn(async move { cluster.join_until_member(bootstrap).await });
                self.inner.tasks.lock().await.push(task);
            }
            StartPlan::WaitToBeAdded => tracing::info!(
                "no consensus state: waiting to be added by a cluster member (POST /peers there) or for \
                 POST /consensus/init to start a new cluster"
            ),
        }
        Ok(())
    }

    /// Stops background work; writes still pending fail with `ShuttingDown`. With
    /// `leave_on_shutdown` the peer first leaves the cluster.
    pub async fn shutdown(&self) {
        self.inner.consensus.shutdown().await;
        self.inner.p2p.shutdown().await;
        self.inner.shutdown.cancel();
        for task in self.inner.tasks.lock().await.drain(..) {
            let _ = task.await;
        }
        tracing::info!("peer stopped");
    }

    /// Resolves once this peer was removed from the cluster; the caller shuts it down and then
    /// calls [`Cluster::clean_after_removal`].
    pub async fn removed(&self) {
        self.inner.consensus.removed().await
    }

    /// Resolves with the reason once consensus failed for good on this peer (see
    /// [`Consensus::failed`]).
    pub async fn consensus_failed(&self) -> String {
        self.inner.consensus.failed().await
    }

    /// Whether this peer was removed from the cluster (or left it).
    pub fn is_removed(&self) -> bool {
        self.inner.consensus.is_removed()
    }

    /// Moves the consensus data of a removed, stopped peer aside: the Raft log, snapshots and
    /// pinset (see [`Consensus::clean_after_removal`]).
    pub fn clean_after_removal(&self) -> Result<()> {
        let data_dir = &self.inner.data_dir;
        let aside = self.inner.consensus.clean_after_removal(data_dir, &data_dir.join(STATE_FILE))?;
        tracing::warn!(moved_to = %aside.display(), "removed from the cluster: consensus data and pinset moved aside");
        Ok(())
    }

    /// Runs `read` against the pinset on a blocking thread (redb reads may touch the disk).
    async fn read_state<T: Send + 'static>(
        &self,
        read: impl FnOnce(&PinState) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let state = self.inner.state.clone();
        tokio::task::spawn_blocking(move || read(&state)).await.expect("state read task")
    }
}
