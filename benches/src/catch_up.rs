//! `catch-up`: how long new peers take to hold a large pinset that predates the cluster.
//!
//! The fixture (`--pins` pins, as `startup` and `stream` build it) is written into the first
//! peer's data dir, every pin allocated to that peer only (its identity is created first, so its
//! peer ID is known): the joiners then hold the replicated pinset but pin nothing, and no fake
//! daemon of theirs weighs on their memory. The first peer (a process of its own, its fake daemon
//! already holding the pins) starts a new cluster on that pinset, which snapshots it for joiners;
//! the bench waits until it leads and its tracker sees every pin pinned. Then peer 2, and once it
//! caught up peer 3, start with `bootstrap` = the first peer, each once every running peer's
//! tracker ended its full sync (`tracker_syncing` 0: peer 1's start-up rebuild, peer 2's sync
//! after its restore), so that a joiner is timed against settled peers. For each joiner, from its process
//! start: serving (REST API up), a member in its own `/consensus`, its `last_applied_index` >= the
//! leader's (read just before), its `cluster_pins` gauge (`GET /metrics`) == `--pins`; caught up
//! = all of these at once. Once both caught up and the cluster converged: `VmRSS`/`VmHWM` of each
//! peer process. The first peer's figures include its fake daemon's pins (reported apart, as
//! measured in that process before the peer started). Then, once peer 3's sync of its restored
//! pinset ended too, the cluster-wide `GET /pins` is timed (at most 1M pins).

use std::time::{Duration, Instant};

use sidecar::identity::{Identity, IDENTITY_FILE};
use sidecar::types::ConsensusRole;

use crate::client;
use crate::cluster::{self, LocalCluster, PeerProcess, PEERS, POLL};
use crate::measure::{self, round1, secs, verdict, CpuCores, CpuWindow, Rss};
use crate::peer::{self, Fixture};
use crate::Args;

const TARGET_S: f64 = 30.0;
/// Items per second of the cluster-wide `GET /pins`.
const STREAM_TARGET: f64 = 200_000.0;
/// The largest pinset whose cluster-wide `GET /pins` is timed.
const STREAM_PINS: u64 = 1_000_000;

/// One joiner's times, from its process start.
struct Joiner {
    name: String,
    up: Duration,
    member: Option<Duration>,
    applied: Option<Duration>,
    all_pins: Option<Duration>,
    caught_up: Duration,
    /// Its copy came through a Raft snapshot (its snapshot directory names a current one).
    via_snapshot: bool,
    cpu: CpuCores,
    /// How long the bench waited for the other peers' full syncs to end before starting it.
    waited: Duration,
}

impl Joiner {
    fn json(&self) -> serde_json::Value {
        let s = |d: Option<Duration>| d.map(secs);
        serde_json::json!({
            "name": self.name, "serving_s": secs(self.up), "member_s": s(self.member), "applied_s": s(self.applied),
            "all_pins_s": s(self.all_pins), "caught_up_s": secs(self.caught_up), "via_snapshot": self.via_snapshot,
            "target_le_30s": self.caught_up.as_secs_f64() <= TARGET_S, "cpu_cores": self.cpu.json(),
            "started_after_syncs_waited_s": secs(self.waited),
        })
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let pins = args.pins;
    let rss_target_mib = if pins > 1_000_000 { 2048.0 } else { 1024.0 };
    println!("== catch-up: {pins} pins in the first peer's state; 2 peers join ({})", measure::load_line());
    let load_before = measure::load();
    // The first peer's identity exists before its pins, which are allocated to it.
    let dir = args.temp_dir("cluster-bench-catch-up-peer1-")?;
    let identity = Identity::load_or_create(&dir.path().join(IDENTITY_FILE))?;
    let fixture = Fixture::build_in(dir, pins, Some(&identity))?;
    let wait_for = Duration::from_secs(120) + Duration::from_secs(pins / 10_000);

    let runtime = cluster::parent_runtime()?;
    let outcome = runtime.block_on(async {
        let mut cluster = LocalCluster::new(args, "cluster-bench-catch-up-")?;
        let result = catch_up(&mut cluster, &fixture, wait_for).await;
        // The listing's target is set at 1M pins; 10M would take minutes per peer.
        let streams = match &result {
            Ok(_) if pins <= STREAM_PINS => stream_cluster_pins(&cluster, pins),
            _ => Vec::new(),
        };
        cluster.stop().await;
        result.map(|caught_up| (caught_up, streams))
    });
    drop(fixture);
    let ((first, joiners, rss), streams) = outcome?;

    let fake_mib = first.ready.fake_mib;
    println!(
        "   peer1        serving {:.2} s after its process started: fake daemon filled with {pins} pins in {:.2} s ({fake_mib:.0} MiB), then Cluster::start (initialising the cluster, snapshotting the pinset) {:.2} s",
        first.up.as_secs_f64(),
        first.ready.fake_s,
        first.ready.start_s
    );
    println!(
        "                leader, tracker saw every pin pinned {:.2} s after its process started; snapshot file {:.0} MiB",
        first.settled.as_secs_f64(),
        first.snapshot_mib
    );
    for j in &joiners {
        let at = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
        println!(
            "   {:<12} caught up {:.2} s after its process started   target <= {TARGET_S} s: {}",
            j.name,
            j.caught_up.as_secs_f64(),
            verdict(j.caught_up.as_secs_f64() <= TARGET_S)
        );
        println!(
            "                serving {}, member {}, applied the leader's index {}, all {pins} pins {}; via a snapshot: {}",
            at(Some(j.up)),
            at(j.member),
            at(j.applied),
            at(j.all_pins),
            if j.via_snapshot { "yes" } else { "NO" }
        );
        println!(
            "                started once the other peers' trackers ended their full syncs ({:.2} s of waiting); meanwhile: {}",
            j.waited.as_secs_f64(),
            j.cpu
        );
    }
    let rss_ok =
        rss.iter().enumerate().all(|(i, r)| r.peak_mib - if i == 0 { fake_mib } else { 0.0 } <= rss_target_mib);
    for (i, r) in rss.iter().enumerate() {
        let note = if i == 0 {
            format!(
                " (its fake daemon's {fake_mib:.0} MiB of pins included; without: VmHWM {:.0} MiB)",
                r.peak_mib - fake_mib
            )
        } else {
            String::new()
        };
        println!("   memory       peer{} {r}{note}", i + 1);
    }
    println!(
        "   memory       target VmHWM <= {rss_target_mib:.0} MiB per peer (peer1 without its fake): {}",
        verdict(rss_ok)
    );
    let caught_up_ok = joiners.len() == PEERS - 1 && joiners.iter().all(|j| j.caught_up.as_secs_f64() <= TARGET_S);
    measure::emit(serde_json::json!({
        "scenario": "catch-up", "pins": pins, "peers": PEERS,
        "first": {
            "serving_s": secs(first.up), "fake_s": first.ready.fake_s, "fake_mib": fake_mib,
            "cluster_start_s": first.ready.start_s, "settled_s": secs(first.settled), "snapshot_mib": round1(first.snapshot_mib),
        },
        "joiners": joiners.iter().map(Joiner::json).collect::<Vec<_>>(),
        "rss_mib": rss.iter().map(|r| round1(r.now_mib)).collect::<Vec<_>>(),
        "hwm_mib": rss.iter().map(|r| round1(r.peak_mib)).collect::<Vec<_>>(),
        "peer1_hwm_without_fake_mib": rss.first().map(|r| round1(r.peak_mib - fake_mib)),
        "cluster_pins_stream": streams,
        "targets": { "catch_up_le_30s": caught_up_ok, format!("hwm_le_{rss_target_mib}mib"): rss_ok },
        "load_before": load_before, "load_after": measure::load(),
    }));
    anyhow::ensure!(joiners.iter().all(|j| j.via_snapshot), "catch-up: a joiner did not receive a snapshot");
    anyhow::ensure!(streams.iter().all(|s| s["ok"] == true), "catch-up: a cluster-wide GET /pins was incomplete");
    Ok(())
}

/// Once every peer holds the pinset: the cluster-wide `GET /pins` (each pin with every peer's
/// status, gathered from the three) read to its end through the first peer (the leader) and the
/// second, on the one-thread client; printed and returned as JSON.
fn stream_cluster_pins(cluster: &LocalCluster, pins: u64) -> Vec<serde_json::Value> {
    cluster.peers[..2]
        .iter()
        .map(|peer| {
            let (addr, name) = (peer.ready.api, peer.options.name.clone());
            let window = CpuWindow::start(&cluster.pids());
            let streamed = client::on_client_thread(move || client::get_stream(addr, "/pins", false));
            let cpu = window.end(&cluster.pids());
            let s = match streamed {
                Ok((Ok(s), _)) => s,
                Ok((Err(e), _)) | Err(e) => {
                    println!("   GET /pins    through {name}: FAILED: {e:#}");
                    return serde_json::json!({ "through": name, "ok": false, "error": format!("{e:#}") });
                }
            };
            let rate = s.lines as f64 / s.total.as_secs_f64();
            let ok = s.status == 200 && s.lines == pins && s.stream_error.as_deref() == Some("");
            println!(
                "   GET /pins    through {name}, cluster-wide: {} items in {:.2} s, {rate:.0} items/s, {} B/item, first byte {:.0} ms, {}   target >= {STREAM_TARGET} items/s: {}",
                s.lines,
                s.total.as_secs_f64(),
                s.bytes / s.lines.max(1),
                s.first_byte.as_secs_f64() * 1000.0,
                if ok { "complete" } else { "INCOMPLETE" },
                verdict(rate >= STREAM_TARGET)
            );
            println!("                meanwhile: {cpu}");
            serde_json::json!({
                "through": name, "items": s.lines, "seconds": secs(s.total), "items_per_s": rate.round(),
                "bytes": s.bytes, "first_byte_ms": round1(s.first_byte.as_secs_f64() * 1000.0), "ok": ok,
                "cpu_cores": cpu.json(), "target_ge_200000_items_per_s": rate >= STREAM_TARGET,
            })
        })
        .collect()
}

/// The first peer once settled.
struct First {
    ready: cluster::Ready,
    up: Duration,
    /// Its process start -> it leads and its tracker sees every pin pinned.
    settled: Duration,
    snapshot_mib: f64,
}

async fn catch_up(
    cluster: &mut LocalCluster,
    fixture: &Fixture,
    wait_for: Duration,
) -> anyhow::Result<(First, Vec<Joiner>, Vec<Rss>)> {
    let pins = fixture.pins;
    cluster.spawn(Some(fixture.dir.path()), pins, fixture.seed).await?;
    let leader = &cluster.peers[0];
    poll(wait_for, "the first peer to lead with every pin pinned, its start-up rebuild over", || async {
        let leads = leader.consensus().await.is_ok_and(|s| s.role == ConsensusRole::Leader);
        let text = leader.metrics().await.unwrap_or_default();
        leads
            && peer::parse_metric(&text, "ipfs_pins") == Some(pins)
            && peer::parse_metric(&text, "tracker_queued") == Some(0)
            && peer::parse_metric(&text, "tracker_syncing") == Some(0)
    })
    .await?;
    let first = First {
        ready: leader.ready.clone(),
        up: leader.up,
        settled: leader.spawned.elapsed(),
        snapshot_mib: snapshot_bytes(&leader.options.data_dir) as f64 / (1 << 20) as f64,
    };

    let mut joiners = Vec::new();
    for _ in 1..PEERS {
        // Each joiner is timed against settled peers: the previous joiner's tracker syncs with
        // its restored pinset first (a scan of every pin), which is not this joiner's catch-up.
        let waited = syncs_ended(cluster, wait_for).await?;
        let cpu = CpuWindow::start(&cluster.pids());
        let index = cluster.spawn(None, 0, 0).await?;
        let mut joiner = watch_joiner(cluster, index, pins, wait_for).await?;
        joiner.cpu = cpu.end(&cluster.pids());
        joiner.waited = waited;
        joiners.push(joiner);
    }
    cluster.wait_converged(Duration::from_secs(120)).await?;
    let rss = cluster.rss();
    // The joiners hold the pinset but none of its pins: nothing for their trackers to do.
    for peer in &cluster.peers[1..] {
        let text = peer.metrics().await?;
        let held = peer::parse_metric(&text, "ipfs_pins").unwrap_or(u64::MAX);
        let queued = peer::parse_metric(&text, "tracker_queued").unwrap_or(u64::MAX);
        if held != 0 || queued != 0 {
            println!(
                "   WARNING      {} pins {held} pins in its fake daemon and has {queued} queued, though no pin is allocated to it",
                peer.options.name
            );
        }
    }
    // The listing that follows is timed on a settled cluster too (peer 3 syncs its restored pinset).
    syncs_ended(cluster, wait_for).await?;
    Ok((first, joiners, rss))
}

/// Waits until every peer's tracker ended its full sync with its daemon; how long that took.
async fn syncs_ended(cluster: &LocalCluster, wait_for: Duration) -> anyhow::Result<Duration> {
    poll(wait_for, "every peer's tracker to end its full sync", || async {
        let mut synced = true;
        for peer in &cluster.peers {
            synced &= peer.metric("tracker_syncing").await.ok() == Some(0);
        }
        synced
    })
    .await
}

/// Polls the joiner `index` (and the leader) until it caught up; its times from its process start.
async fn watch_joiner(cluster: &LocalCluster, index: usize, pins: u64, wait_for: Duration) -> anyhow::Result<Joiner> {
    let joiner: &PeerProcess = &cluster.peers[index];
    let since = |at: Instant| at.duration_since(joiner.spawned);
    let (mut member, mut applied, mut all_pins) = (None, None, None);
    loop {
        let now = Instant::now();
        let status = joiner.consensus().await.ok();
        let leader = match status.as_ref().and_then(|s| s.leader.as_deref()).and_then(|l| cluster.index_of(l)) {
            Some(i) if i != index => cluster.peers[i].consensus().await.ok(),
            _ => None,
        };
        // Read after the leader's index, so that "applied >= the leader's" is not flattered.
        let status = if leader.is_some() { joiner.consensus().await.ok() } else { status };
        let held = joiner.metric("pins").await.ok();
        let is_member = status.as_ref().is_some_and(|s| s.members.iter().any(|m| m.peer_id == joiner.ready.peer_id));
        let has_applied = match (&status, &leader) {
            (Some(s), Some(l)) => s.last_applied_index >= l.last_applied_index && s.last_applied_index.is_some(),
            _ => false,
        };
        if is_member {
            member.get_or_insert(since(now));
        }
        if has_applied {
            applied.get_or_insert(since(now));
        }
        if held == Some(pins) {
            all_pins.get_or_insert(since(now));
        }
        if is_member && has_applied && held == Some(pins) {
            return Ok(Joiner {
                name: joiner.options.name.clone(),
                up: joiner.up,
                member,
                applied,
                all_pins,
                caught_up: since(now),
                via_snapshot: snapshot_bytes(&joiner.options.data_dir) > 0,
                cpu: CpuCores::default(),
                waited: Duration::ZERO,
            });
        }
        // A Raft node that stopped on a storage error never catches up: say so at once.
        let stopped =
            status.as_ref().is_some_and(|s| matches!(s.role, ConsensusRole::Stopped | ConsensusRole::Removed));
        anyhow::ensure!(
            joiner.spawned.elapsed() < wait_for && !stopped,
            "{} did not catch up{}: member {is_member}, applied {:?} (leader {:?}), pins {held:?} of {pins}; its /consensus: {}; its log ends with:\n{}",
            joiner.options.name,
            if stopped { " (its Raft node stopped)".to_string() } else { format!(" within {wait_for:?}") },
            status.as_ref().and_then(|s| s.last_applied_index),
            leader.as_ref().and_then(|s| s.last_applied_index),
            status.as_ref().map_or_else(|| "no answer".to_string(), |s| serde_json::to_string(s).unwrap_or_default()),
            joiner.log_tail()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Size of the current Raft snapshot under a data dir (`raft/snapshots/*.snap`); 0 when none.
fn snapshot_bytes(data_dir: &std::path::Path) -> u64 {
    let dir = data_dir.join(sidecar::consensus::CONSENSUS_DIR).join("snapshots");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
                .filter(|e| e.file_name() != "incoming.snap" && e.file_name() != "building.snap")
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Polls `check` every [`POLL`] until it holds; an error after `timeout`.
async fn poll<F, Fut>(timeout: Duration, what: &str, check: F) -> anyhow::Result<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        anyhow::ensure!(started.elapsed() < timeout, "waiting for {what}: not after {timeout:?}");
        tokio::time::sleep(POLL).await;
    }
    Ok(started.elapsed())
}
