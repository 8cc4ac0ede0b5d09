//! Peers in processes of their own, for the cluster scenarios (`cluster-ingest`, `failover`,
//! `catch-up`).
//!
//! The bench re-executes itself as the hidden `peer-child` scenario: one `Cluster` on its data
//! directory (identity in `identity.json` there, so a restart is the same member), a `FakeIpfs`
//! (optionally holding the fixture's pins already, as a real daemon would), the REST API on
//! 127.0.0.1 port 0 and the cluster host on 127.0.0.1 (port 0 on the first start, the same port on
//! a restart, since the other members know it by that address). Once it serves, it prints ONE JSON
//! line on stdout ([`Ready`]) and runs until its stdin closes (clean stop) or it is killed. Every
//! child gets `PR_SET_PDEATHSIG` = SIGKILL (and is killed on drop), so none outlives the bench.
//! Its log (warnings, or what `CLUSTER_BENCH_LOG` says) goes to `peer<N>.log` in the cluster's
//! temp dir, or in `--logs`.
//!
//! The parent drives everything on ONE thread (a current-thread runtime on the main thread: the
//! death signal follows the thread that spawned a child) and polls the peers' REST API:
//! `GET /consensus` and `GET /metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sidecar::identity::{Identity, IDENTITY_FILE};
use sidecar::types::{ConsensusRole, ConsensusStatus};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::client;
use crate::measure::{self, Rss};
use crate::peer::{self, Peer};
use crate::Args;

/// Members of the clusters the scenarios start.
pub const PEERS: usize = 3;
/// How long one REST call of the parent may take.
const CALL: Duration = Duration::from_secs(5);
/// Between two polls of the peers.
pub const POLL: Duration = Duration::from_millis(20);

/// What a peer child prints on stdout once it serves (one JSON line).
#[derive(Clone, Debug)]
pub struct Ready {
    pub api: SocketAddr,
    /// Its cluster address with `/p2p/<peer id>`: the others' `--bootstrap`.
    pub cluster: String,
    pub peer_id: String,
    pub pid: u32,
    /// Filling the fake daemon with the fixture's pins (before the peer started).
    pub fake_s: f64,
    /// RSS those pins took in the child (a real daemon holds them in its own process).
    pub fake_mib: f64,
    /// `Cluster::start` and the REST API up, after the fake was filled.
    pub start_s: f64,
}

impl Ready {
    fn parse(line: &str) -> anyhow::Result<Ready> {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("peer child said {line:?}"))?;
        let text = |k: &str| v[k].as_str().map(String::from).with_context(|| format!("no {k} in {line}"));
        Ok(Ready {
            api: text("api")?.parse()?,
            cluster: text("cluster")?,
            peer_id: text("peer_id")?,
            pid: v["pid"].as_u64().context("no pid")? as u32,
            fake_s: v["fake_s"].as_f64().unwrap_or(0.0),
            fake_mib: v["fake_mib"].as_f64().unwrap_or(0.0),
            start_s: v["start_s"].as_f64().unwrap_or(f64::NAN),
        })
    }

    /// The cluster address without `/p2p/...`: where it listens.
    fn listen(&self) -> String {
        self.cluster.split("/p2p/").next().unwrap_or_default().to_string()
    }
}

/// How to start one peer child.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    pub name: String,
    pub data_dir: PathBuf,
    /// `consensus.bootstrap` (a member's cluster address); `None` starts a new cluster.
    pub bootstrap: Option<String>,
    /// Pins of fixture `seed` the fake daemon holds from the start.
    pub fake_pins: u64,
    pub seed: u64,
    /// `--heartbeat-ms` and `--election-timeout-ms`, passed on.
    pub raft_timing: Vec<String>,
}

/// The Raft timing flags of `args`, to pass on to a peer child.
fn raft_timing(args: &Args) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(ms) = args.heartbeat_ms {
        flags.extend(["--heartbeat-ms".to_string(), ms.to_string()]);
    }
    if let Some((min, max)) = args.election_timeout_ms {
        flags.extend(["--election-timeout-ms".to_string(), format!("{min}-{max}")]);
    }
    flags
}

/// The Raft timing the peers run with (flags, else the sidecar's defaults), for the summaries.
pub fn timing(args: &Args) -> (String, serde_json::Value) {
    let defaults = sidecar::consensus::ConsensusConfig::default();
    let heartbeat = args.heartbeat_ms.unwrap_or(defaults.heartbeat_interval.as_millis() as u64);
    let (min, max) = args.election_timeout_ms.unwrap_or((
        defaults.election_timeout_min.as_millis() as u64,
        defaults.election_timeout_max.as_millis() as u64,
    ));
    let given = args.heartbeat_ms.is_some() || args.election_timeout_ms.is_some();
    (
        format!(
            "Raft heartbeat {heartbeat} ms, election timeout {min}-{max} ms ({})",
            if given { "set by flags" } else { "the sidecar's defaults" }
        ),
        serde_json::json!({ "heartbeat_ms": heartbeat, "election_timeout_ms": [min, max], "defaults": !given }),
    )
}

/// A running peer child (or one killed, until it is restarted).
pub struct PeerProcess {
    pub options: PeerOptions,
    log: PathBuf,
    secret: String,
    /// Cluster listen address: port 0 the first time, then the port it got.
    listen: String,
    child: Option<Child>,
    /// Closing it asks the child to stop.
    stdin: Option<ChildStdin>,
    _stdout: Option<Lines<BufReader<ChildStdout>>>,
    /// What the current (or last) process said once ready.
    pub ready: Ready,
    /// When the current (or last) process was spawned.
    pub spawned: Instant,
    /// Spawned -> its ready line read.
    pub up: Duration,
}

impl PeerProcess {
    /// Spawns the child and waits for its ready line (at most `timeout`).
    pub async fn start(options: PeerOptions, log: PathBuf, secret: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut peer = PeerProcess {
            options,
            log,
            secret: secret.to_string(),
            listen: "/ip4/127.0.0.1/tcp/0".to_string(),
            child: None,
            stdin: None,
            _stdout: None,
            ready: Ready {
                api: ([127, 0, 0, 1], 0).into(),
                cluster: String::new(),
                peer_id: String::new(),
                pid: 0,
                fake_s: 0.0,
                fake_mib: 0.0,
                start_s: f64::NAN,
            },
            spawned: Instant::now(),
            up: Duration::ZERO,
        };
        peer.spawn(timeout).await?;
        Ok(peer)
    }

    async fn spawn(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let o = &self.options;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        // The child dies with this process, as test peers do.
        e2e::peer::die_with_parent(&mut command);
        let mut command = Command::from(command);
        command
            .arg("peer-child")
            .arg("--state-dir")
            .arg(&o.data_dir)
            .args(["--peername", &o.name, "--secret", &self.secret, "--listen", &self.listen])
            .args(["--fake-pins", &o.fake_pins.to_string(), "--seed", &o.seed.to_string()])
            .args(o.bootstrap.iter().flat_map(|b| ["--bootstrap", b.as_str()]))
            .args(&o.raft_timing)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        self.spawned = Instant::now();
        let mut child = command.spawn().context("spawning a peer child")?;
        self.stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().context("the child's stdout")?).lines();
        self.child = Some(child);
        let line = match tokio::time::timeout(timeout, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            outcome => {
                self.kill9().await;
                let why = match outcome {
                    Err(_) => format!("not ready after {timeout:?}"),
                    Ok(Err(e)) => format!("reading its stdout: {e}"),
                    Ok(Ok(_)) => "exited before it was ready".to_string(),
                };
                anyhow::bail!("peer child {}: {why}; its log ends with:\n{}", self.options.name, self.log_tail());
            }
        };
        self.up = self.spawned.elapsed();
        self._stdout = Some(lines);
        self.ready = Ready::parse(&line)?;
        self.listen = self.ready.listen();
        Ok(())
    }

    /// SIGKILL, as a crashed node: no shutdown code runs. Returns once the process is gone.
    pub async fn kill9(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// A new process on the same data directory and cluster address.
    pub async fn restart(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.kill9().await;
        self.spawn(timeout).await
    }

    /// Closes its stdin (a clean stop) and waits up to 10 s, then kills it.
    pub async fn stop(&mut self) {
        self.stdin = None;
        if let Some(child) = self.child.as_mut() {
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                eprintln!("peer child {} did not stop within 10 s; killing it", self.options.name);
            }
        }
        self.kill9().await;
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn rss(&self) -> Rss {
        Rss::of_pid(self.ready.pid)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `GET /consensus`.
    pub async fn consensus(&self) -> anyhow::Result<ConsensusStatus> {
        let (status, body) = client::get_body(self.ready.api, "/consensus", CALL).await?;
        anyhow::ensure!(status == 200, "GET /consensus: {status}");
        Ok(serde_json::from_slice(&body)?)
    }

    /// `GET /metrics`, the Prometheus text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = client::get_body(self.ready.api, "/metrics", CALL).await?;
        anyhow::ensure!(status == 200, "GET /metrics: {status}");
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// One gauge or counter of `GET /metrics` (see [`peer::parse_metric`]).
    pub async fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let text = self.metrics().await?;
        peer::parse_metric(&text, name).with_context(|| format!("no cluster_{name} in GET /metrics"))
    }
}

/// Peer children sharing one cluster secret, their logs and (by default) data dirs in one temp dir.
pub struct LocalCluster {
    /// Declared first: dropped (killed) before the temp dir goes.
    pub peers: Vec<PeerProcess>,
    secret: String,
    dir: tempfile::TempDir,
    /// Where the logs go: `--logs`, else the temp dir.
    logs: PathBuf,
    raft_timing: Vec<String>,
}

impl LocalCluster {
    /// No peers yet; a fresh secret and temp dir.
    pub fn new(args: &Args, prefix: &str) -> anyhow::Result<LocalCluster> {
        let secret: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
        let dir = args.temp_dir(prefix)?;
        let logs = match &args.logs {
            Some(logs) => {
                std::fs::create_dir_all(logs)?;
                logs.clone()
            }
            None => dir.path().to_path_buf(),
        };
        Ok(LocalCluster { peers: Vec::new(), secret, dir, logs, raft_timing: raft_timing(args) })
    }

    /// `PEERS` peers: the first starts the cluster, the others (started one after the other, each
    /// once the previous one serves) join through it by themselves; returns once converged.
    pub async fn start(args: &Args, prefix: &str) -> anyhow::Result<LocalCluster> {
        let mut cluster = LocalCluster::new(args, prefix)?;
        for _ in 0..PEERS {
            cluster.spawn(None, 0, 0).await?;
        }
        cluster.wait_converged(Duration::from_secs(120)).await?;
        Ok(cluster)
    }

    /// Starts peer number `peers.len() + 1` (in `data_dir`, else `peer<N>` in the temp dir); all
    /// but the first join through the first. Its fake daemon holds `fake_pins` of fixture `seed`.
    pub async fn spawn(&mut self, data_dir: Option<&Path>, fake_pins: u64, seed: u64) -> anyhow::Result<usize> {
        let n = self.peers.len() + 1;
        let options = PeerOptions {
            name: format!("peer{n}"),
            data_dir: data_dir.map_or_else(|| self.dir.path().join(format!("peer{n}")), Path::to_path_buf),
            bootstrap: self.peers.first().map(|p| p.ready.cluster.clone()),
            fake_pins,
            seed,
            raft_timing: self.raft_timing.clone(),
        };
        let log = self.logs.join(format!("peer{n}.log"));
        // Filling a fake daemon and snapshotting a large pinset take a while.
        let timeout = Duration::from_secs(120) + Duration::from_secs(fake_pins / 10_000);
        self.peers.push(PeerProcess::start(options, log, &self.secret, timeout).await?);
        Ok(n - 1)
    }

    /// The index of the peer with this peer ID.
    pub fn index_of(&self, peer_id: &str) -> Option<usize> {
        self.peers.iter().position(|p| p.ready.peer_id == peer_id)
    }

    /// Every running peer's `/consensus`, in order (`None` for a stopped or silent one).
    pub async fn statuses(&self) -> Vec<Option<ConsensusStatus>> {
        let mut out = Vec::with_capacity(self.peers.len());
        for peer in &self.peers {
            out.push(if peer.is_running() { peer.consensus().await.ok() } else { None });
        }
        out
    }

    /// Converged: every peer runs and answers, all name the same leader (which says it leads),
    /// see all peers as voting members, no change is half-way, and all applied the same index.
    /// Returns the leader's index.
    fn converged(&self, statuses: &[Option<ConsensusStatus>]) -> Option<usize> {
        let all: Vec<&ConsensusStatus> = statuses.iter().map(Option::as_ref).collect::<Option<_>>()?;
        let leader = all.first()?.leader.clone()?;
        let leader_index = self.index_of(&leader)?;
        let agreed = all.iter().all(|s| {
            s.leader.as_deref() == Some(leader.as_str())
                && s.members.len() == self.peers.len()
                && s.members.iter().all(|m| m.voter)
                && !s.joint
                && s.last_applied_index == all[leader_index].last_applied_index
        });
        (agreed && all[leader_index].role == ConsensusRole::Leader).then_some(leader_index)
    }

    /// Polls until [`LocalCluster::converged`]; the leader's index and every status.
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<(usize, Vec<ConsensusStatus>)> {
        let started = Instant::now();
        loop {
            let statuses = self.statuses().await;
            if let Some(leader) = self.converged(&statuses) {
                return Ok((leader, statuses.into_iter().flatten().collect()));
            }
            if started.elapsed() > timeout {
                let seen: Vec<String> = statuses
                    .iter()
                    .zip(&self.peers)
                    .map(|(s, p)| match s {
                        Some(s) => format!(
                            "{}: {:?}, leader {:?}, term {}, applied {:?}, {} members ({} voters), joint {}",
                            p.options.name,
                            s.role,
                            s.leader.as_deref().and_then(|l| self.index_of(l)).map(|i| &self.peers[i].options.name),
                            s.term,
                            s.last_applied_index,
                            s.members.len(),
                            s.members.iter().filter(|m| m.voter).count(),
                            s.joint
                        ),
                        None => format!("{}: no answer", p.options.name),
                    })
                    .collect();
                anyhow::bail!("the cluster did not converge within {timeout:?}:\n   {}", seen.join("\n   "));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls every peer's `GET /metrics` until `done(text)` holds on each; how long each took.
    pub async fn wait_metrics(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<Duration>> {
        let started = Instant::now();
        let mut took: Vec<Option<Duration>> = vec![None; self.peers.len()];
        loop {
            for (i, peer) in self.peers.iter().enumerate() {
                if took[i].is_none() && peer.metrics().await.is_ok_and(|text| done(&text)) {
                    took[i] = Some(started.elapsed());
                }
            }
            if took.iter().all(Option::is_some) {
                return Ok(took.into_iter().flatten().collect());
            }
            if started.elapsed() > timeout {
                let late: Vec<&str> = took
                    .iter()
                    .zip(&self.peers)
                    .filter(|(t, _)| t.is_none())
                    .map(|(_, p)| p.options.name.as_str())
                    .collect();
                anyhow::bail!("{what}: not on {} within {timeout:?}", late.join(", "));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every peer has heard every peer's free space (`GET /monitor/metrics/freespace`):
    /// a pin with a replication factor is allocated among those, by the peer that takes it.
    pub async fn wait_free_space_known(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let mut known = Vec::with_capacity(self.peers.len());
            for peer in &self.peers {
                let listed = match client::get_body(peer.ready.api, "/monitor/metrics/freespace", CALL).await {
                    Ok((200, body)) => serde_json::from_slice::<Vec<serde_json::Value>>(&body).map_or(0, |m| m.len()),
                    _ => 0,
                };
                known.push(listed);
            }
            if known.iter().all(|&n| n >= self.peers.len()) {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "the peers know the free space of {known:?} peers after {timeout:?}, not all {}",
                self.peers.len()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops every peer cleanly (stdin closed), then removes the temp dir.
    pub async fn stop(mut self) {
        for peer in &mut self.peers {
            peer.stop().await;
        }
    }

    /// Every peer's RSS now (`VmRSS`, `VmHWM`).
    pub fn rss(&self) -> Vec<Rss> {
        self.peers.iter().map(PeerProcess::rss).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.peers.iter().map(|p| p.ready.pid).collect()
    }
}

/// The parent's runtime: one thread, the main one (see the module docs).
pub fn parent_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// `peer-child`: one peer, until stdin closes or the process is killed.
pub fn child(args: &Args) -> anyhow::Result<()> {
    let dir = args.state_dir.clone().context("--state-dir is required")?;
    std::fs::create_dir_all(&dir)?;
    let rss_empty = Rss::read();
    let t = Instant::now();
    let ipfs = Arc::new(peer::fake_with_pins(args.seed, args.fake_pins));
    let fake_s = t.elapsed();
    let fake_mib = Rss::read().now_mib - rss_empty.now_mib;

    let identity = Identity::load_or_create(&dir.join(IDENTITY_FILE))?;
    let mut config = peer::config(&args.peername);
    config.p2p.secret = sidecar::p2p::parse_secret(args.secret.as_deref().context("--secret is required")?)?;
    config.p2p.listen = args.listen.parse().context("--listen")?;
    config.consensus.bootstrap = args.bootstrap.iter().map(|b| b.parse()).collect::<Result<_, _>>()?;
    if let Some(ms) = args.heartbeat_ms {
        config.consensus.heartbeat_interval = Duration::from_millis(ms);
    }
    if let Some((min, max)) = args.election_timeout_ms {
        config.consensus.election_timeout_min = Duration::from_millis(min);
        config.consensus.election_timeout_max = Duration::from_millis(max);
    }

    let runtime = peer::server_runtime()?;
    runtime.block_on(async move {
        let t = Instant::now();
        let peer = Peer::start_with(config, identity, &dir, ipfs).await?;
        let start_s = t.elapsed();
        let id = peer.cluster.id().await;
        let cluster = id.addresses.first().context("the peer listens on no cluster address")?.to_string();
        let ready = serde_json::json!({
            "api": peer.addr.to_string(), "cluster": cluster, "peer_id": id.id.map(|p| p.to_string()),
            "pid": std::process::id(), "fake_s": measure::secs(fake_s), "fake_mib": measure::round1(fake_mib),
            "start_s": measure::secs(start_s),
        });
        println!("{ready}");
        // Until the parent closes our stdin (or dies: then the kernel kills us).
        let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
        peer.stop().await;
        anyhow::Ok(())
    })?;
    // The stdin reader has ended: nothing blocks the runtime's shutdown.
    drop(runtime);
    Ok(())
}
