//! `failover`: how long a 3-peer cluster takes writes again after its leader dies.
//!
//! Each round, once the cluster has converged (one leader, three voters, same applied index): one
//! client writes pins back to back (`POST /pins/{cid}`, unique CIDs, one keep-alive connection) to
//! a follower for [`STEADY`]; then the leader's process is killed with SIGKILL. Recovery is the
//! time from the kill to the acknowledgement of the first write SENT after the kill (a write that
//! could only be committed under a new leader; a write already committed when the leader died is
//! not evidence). Counted as well: writes that failed (non-2xx, transport error, or no answer
//! within [`WRITE_TIMEOUT`]) and writes slower than [`SLOW`] between the kill and the recovery,
//! and the longest write. Then the killed peer is started again as a new process on the same data
//! dir and cluster address (it resumes as the member it was) and the round ends when the cluster
//! has converged again; how long that took, and whether the rejoin caused another election (the
//! term moved on again), are reported. `--rounds` rounds; median and max of the recovery time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sidecar::ipfs::fake::raw_block_cid;
use tokio_util::sync::CancellationToken;

use crate::client::{self, PostError};
use crate::cluster::{self, LocalCluster, PEERS};
use crate::measure::{self, round2, secs, verdict, CpuWindow};
use crate::Args;

/// Writes before the kill, for a steady state and the usual write latency.
const STEADY: Duration = Duration::from_secs(1);
/// Writes after the recovery, so the recovery is not the last thing the client saw.
const AFTER: Duration = Duration::from_millis(300);
/// A write this slow is counted as slow.
const SLOW: Duration = Duration::from_millis(100);
/// The client gives up on a write after this long (the peer's own commit timeout is 30 s).
const WRITE_TIMEOUT: Duration = Duration::from_secs(35);
/// A round without recovery within this long fails.
const GIVE_UP: Duration = Duration::from_secs(60);
const TARGET_S: f64 = 3.0;

/// One write as the client saw it.
#[derive(Clone, Copy, Debug)]
struct Write {
    sent: Instant,
    done: Instant,
    ok: bool,
}

impl Write {
    fn latency(&self) -> Duration {
        self.done - self.sent
    }
}

/// The figures of one round.
struct Round {
    killed: String,
    writer_on: String,
    new_leader: String,
    recovery: Duration,
    /// Kill -> the killed process was reaped.
    kill_took: Duration,
    writes: usize,
    failed: usize,
    slow: usize,
    max_write: Duration,
    steady_p50_ms: f64,
    first_error: Option<String>,
    /// Restart -> the new process served; -> the cluster converged again.
    restart_up: Duration,
    rejoined: Duration,
    term_before: u64,
    term_after_kill: u64,
    term_after_rejoin: u64,
    cpu: measure::CpuCores,
}

impl Round {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "killed": self.killed, "writer_on": self.writer_on, "new_leader": self.new_leader,
            "recovery_s": secs(self.recovery), "kill_s": secs(self.kill_took), "writes": self.writes,
            "failed": self.failed, "slow": self.slow, "max_write_ms": round2(self.max_write.as_secs_f64() * 1000.0),
            "steady_p50_ms": round2(self.steady_p50_ms), "first_error": self.first_error,
            "restart_up_s": secs(self.restart_up), "rejoined_s": secs(self.rejoined),
            "terms": [self.term_before, self.term_after_kill, self.term_after_rejoin],
            "cpu_cores_until_recovery": self.cpu.json(),
        })
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let rounds = args.rounds.max(1);
    println!(
        "== failover: {PEERS} peers (a process each), {rounds} rounds of SIGKILL to the leader while a client writes to a follower ({})",
        measure::load_line()
    );
    let (timing, timing_json) = cluster::timing(args);
    println!("   settings     {timing}");
    let load_before = measure::load();
    let runtime = cluster::parent_runtime()?;
    let outcome = runtime.block_on(async {
        let mut cluster = LocalCluster::start(args, "cluster-bench-failover-").await?;
        let mut done = Vec::new();
        let mut failure = None;
        for n in 1..=rounds {
            match round(&mut cluster).await {
                Ok(r) => {
                    print_round(n, &r);
                    done.push(r);
                }
                Err(e) => {
                    println!("   round {n}: FAILED: {e:#}");
                    failure = Some(e);
                    break;
                }
            }
        }
        cluster.stop().await;
        anyhow::Ok((done, failure))
    })?;
    let (done, failure) = outcome;

    let mut recoveries: Vec<f64> = done.iter().map(|r| r.recovery.as_secs_f64()).collect();
    let max = recoveries.iter().copied().fold(f64::NAN, f64::max);
    let median = measure::median(&mut recoveries);
    let failed: usize = done.iter().map(|r| r.failed).sum();
    let slow: usize = done.iter().map(|r| r.slow).sum();
    let mut rejoins: Vec<f64> = done.iter().map(|r| r.rejoined.as_secs_f64()).collect();
    let rejoin_max = rejoins.iter().copied().fold(f64::NAN, f64::max);
    let rejoin_median = measure::median(&mut rejoins);
    let disruptive = done.iter().filter(|r| r.term_after_rejoin != r.term_after_kill).count();
    let ok = done.len() == rounds && max <= TARGET_S;
    println!(
        "   recovery     median {median:.3} s, max {max:.3} s over {} rounds   target <= {TARGET_S} s: {}",
        done.len(),
        verdict(ok)
    );
    println!(
        "   writes       {failed} failed, {slow} slower than {} ms, between the kills and the recoveries",
        SLOW.as_millis()
    );
    println!(
        "   rejoin       restart -> converged: median {rejoin_median:.2} s, max {rejoin_max:.2} s; {disruptive} of {} rejoins started another election",
        done.len()
    );
    measure::emit(serde_json::json!({
        "scenario": "failover", "peers": PEERS, "rounds": done.iter().map(Round::json).collect::<Vec<_>>(),
        "recovery_median_s": round3(median), "recovery_max_s": round3(max), "failed_writes": failed,
        "slow_writes": slow, "slow_ms": SLOW.as_millis() as u64, "rejoin_median_s": round3(rejoin_median),
        "rejoin_max_s": round3(rejoin_max), "disruptive_rejoins": disruptive,
        "targets": { "recovery_le_3s": ok }, "raft": timing_json,
        "load_before": load_before, "load_after": measure::load(),
    }));
    if let Some(e) = failure {
        return Err(e.context("failover"));
    }
    Ok(())
}

fn round3(v: f64) -> Option<f64> {
    v.is_finite().then(|| (v * 1000.0).round() / 1000.0)
}

fn print_round(n: usize, r: &Round) {
    println!(
        "   round {n}: killed {} (leader, term {}); writer on {}; {} leads (term {})",
        r.killed, r.term_before, r.writer_on, r.new_leader, r.term_after_kill
    );
    println!(
        "            kill -> next acknowledged write {:.3} s   target <= {TARGET_S} s: {}",
        r.recovery.as_secs_f64(),
        verdict(r.recovery.as_secs_f64() <= TARGET_S)
    );
    println!(
        "            {} writes, {} failed, {} slower than {} ms, longest {:.0} ms (before the kill: p50 {:.1} ms){}",
        r.writes,
        r.failed,
        r.slow,
        SLOW.as_millis(),
        r.max_write.as_secs_f64() * 1000.0,
        r.steady_p50_ms,
        r.first_error.as_deref().map(|e| format!("; first error: {e}")).unwrap_or_default()
    );
    println!("            until the recovery: {}", r.cpu);
    println!(
        "            restarted: serving after {:.2} s, cluster converged after {:.2} s (term {}{})",
        r.restart_up.as_secs_f64(),
        r.rejoined.as_secs_f64(),
        r.term_after_rejoin,
        if r.term_after_rejoin != r.term_after_kill { ": the rejoin caused another election" } else { "" }
    );
}

/// One kill and restart of the leader.
async fn round(cluster: &mut LocalCluster) -> anyhow::Result<Round> {
    let (leader, statuses) = cluster.wait_converged(Duration::from_secs(60)).await?;
    let term_before = statuses[leader].term;
    let target = (leader + 1) % cluster.peers.len();
    let name = |c: &LocalCluster, i: usize| c.peers[i].options.name.clone();

    let writer = Writer::start(cluster.peers[target].ready.api);
    tokio::time::sleep(STEADY).await;
    let cpu = CpuWindow::start(&cluster.pids());
    let killed_at = Instant::now();
    cluster.peers[leader].kill9().await;
    let kill_took = killed_at.elapsed();
    let recovered = loop {
        if let Some(w) = writer.first_ack_sent_after(killed_at) {
            break w.done;
        }
        if killed_at.elapsed() > GIVE_UP {
            writer.stop().await;
            anyhow::bail!("no write was acknowledged within {GIVE_UP:?} of the kill");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let survivors: Vec<u32> =
        cluster.peers.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, p)| p.ready.pid).collect();
    let cpu = cpu.end(&survivors);
    tokio::time::sleep(AFTER).await;
    let (writes, first_error) = writer.stop().await;

    let mut steady: Vec<u32> = writes
        .iter()
        .filter(|w| w.ok && w.done < killed_at)
        .map(|w| w.latency().as_micros().min(u32::MAX as u128) as u32)
        .collect();
    let steady_p50_ms = measure::Percentiles::of(&mut steady).p50;
    // The writes that overlap the outage: done after the kill, sent before the recovery.
    let outage: Vec<&Write> = writes.iter().filter(|w| w.done >= killed_at && w.sent <= recovered).collect();
    let status = cluster.peers[target].consensus().await?;
    let new_leader = status.leader.as_deref().and_then(|l| cluster.index_of(l));

    let restart_at = Instant::now();
    cluster.peers[leader].restart(Duration::from_secs(60)).await?;
    let restart_up = restart_at.elapsed();
    let (now_leading, after) = cluster.wait_converged(Duration::from_secs(120)).await?;
    let rejoined = restart_at.elapsed();

    Ok(Round {
        killed: name(cluster, leader),
        writer_on: name(cluster, target),
        new_leader: new_leader.map_or_else(|| "?".to_string(), |i| name(cluster, i)),
        recovery: recovered - killed_at,
        kill_took,
        writes: writes.len(),
        failed: outage.iter().filter(|w| !w.ok).count(),
        slow: outage.iter().filter(|w| w.ok && w.latency() > SLOW).count(),
        max_write: writes.iter().map(Write::latency).max().unwrap_or_default(),
        steady_p50_ms,
        first_error,
        restart_up,
        rejoined,
        term_before,
        term_after_kill: status.term,
        term_after_rejoin: after[now_leading].term,
        cpu,
    })
}

/// The client: one task writing back to back until stopped, noting every write.
struct Writer {
    writes: Arc<Mutex<Vec<Write>>>,
    first_error: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(addr: std::net::SocketAddr) -> Writer {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let first_error = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let task = tokio::spawn(write_until(addr, writes.clone(), first_error.clone(), stop.clone()));
        Writer { writes, first_error, stop, task }
    }

    fn first_ack_sent_after(&self, at: Instant) -> Option<Write> {
        self.writes.lock().expect("writes").iter().rev().take_while(|w| w.sent >= at).filter(|w| w.ok).last().copied()
    }

    /// Stops after the write in flight; every write and the first error.
    async fn stop(self) -> (Vec<Write>, Option<String>) {
        self.stop.cancel();
        let _ = self.task.await;
        let writes = std::mem::take(&mut *self.writes.lock().expect("writes"));
        let first_error = self.first_error.lock().expect("first error").take();
        (writes, first_error)
    }
}

async fn write_until(
    addr: std::net::SocketAddr,
    writes: Arc<Mutex<Vec<Write>>>,
    first_error: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
) {
    let mut sender = None;
    while !stop.is_cancelled() {
        let path = format!("/pins/{}?name=failover", raw_block_cid(&rand::random::<[u8; 32]>()));
        let sent = Instant::now();
        let attempt = async {
            if sender.is_none() {
                sender = Some(client::connect(addr).await.map_err(|e| PostError::Connection(format!("connect: {e}")))?);
            }
            client::post(sender.as_mut().expect("connected above"), &path).await
        };
        let error = match tokio::time::timeout(WRITE_TIMEOUT, attempt).await {
            Ok(Ok(())) => None,
            Ok(Err(PostError::Request(e))) => Some(e),
            Ok(Err(PostError::Connection(e))) => {
                sender = None;
                Some(e)
            }
            Err(_) => {
                sender = None;
                Some(format!("no answer within {WRITE_TIMEOUT:?}"))
            }
        };
        writes.lock().expect("writes").push(Write { sent, done: Instant::now(), ok: error.is_none() });
        if let Some(e) = error {
            first_error.lock().expect("first error").get_or_insert(e);
            // Do not spin on an error that comes back at once.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
