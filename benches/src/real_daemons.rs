//! `real-daemons`: pins/s until pinned in the daemons, for a 3-peer cluster of real peer processes
//! (the `cluster-sidecar` binary next to this one) each beside its own real js-ipfs daemon, started
//! by the e2e harness (`TestCluster`, the peers logging as the harness has them: `sidecar=debug`).
//! The content is put into every daemon first, so pinning fetches nothing.
//!
//! - Before any clock starts: `--daemon-pins` distinct small raw blocks `block/put` into each of
//!   the 3 daemons, 16 calls in flight per daemon (timed, not part of the figures).
//! - Measured: `--clients` tasks `POST /pins/{cid}` (replication -1: every peer pins it), client
//!   `c` on peer `c % 3`, each CID once, body read to its end. Acknowledged: first POST until every
//!   POST answered (latency per POST). Pinned: first POST until each daemon's own `pin/ls` lists
//!   every CID, polled every 200 ms once every POST answered; `pin/ls` is costly in js-ipfs, so a
//!   daemon is listed only once its sidecar's `cluster_ipfs_pins` gauge reaches the count.
//! - CPU over the measured phase by program (`/proc/*/stat`): the daemons are `node`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use e2e::cluster::{Daemons, Member, TestCluster};
use e2e::common::{block_put, key, raw_cid};
use futures::StreamExt;
use reqwest::Method;
use sidecar::types::CidKey;

use crate::measure::{self, secs, Percentiles};
use crate::Args;

const PEERS: usize = 3;
/// `block/put` calls in flight per daemon while the content goes in.
const PUTS_IN_FLIGHT: usize = 16;
const POLL: Duration = Duration::from_millis(200);
/// The wait for the daemons is at least this, and this much per pin beyond.
const MIN_WAIT: Duration = Duration::from_secs(120);
const WAIT_PER_PIN: Duration = Duration::from_millis(50);
/// A sidecar gets this long to exit on SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: &Args) -> Result<()> {
    let (count, clients) = (args.daemon_pins, args.clients.max(1));
    println!(
        "== real-daemons: {count} pins, {clients} clients round-robin over {PEERS} peers, each beside its own js-ipfs daemon ({}) ==",
        measure::load_line()
    );
    let load_before = measure::load();
    // One thread, the main one: the peers' death signal follows the thread that spawned them.
    let runtime = crate::cluster::parent_runtime()?;
    runtime.block_on(async {
        let started = Instant::now();
        let mut cluster = TestCluster::start(PEERS, Daemons::Own, &[]).await;
        let pids = |pid: fn(&Member) -> Option<u32>| cluster.members.iter().filter_map(pid).collect::<Vec<_>>();
        println!(
            "   cluster      up in {:.1} s; sidecars' pids {:?}, daemons' (node) {:?}",
            started.elapsed().as_secs_f64(),
            pids(|m| m.peer.process.pid()),
            pids(|m| m.daemon().pid())
        );
        let outcome = measure(&cluster, count, clients, load_before).await;
        // Sidecars first (SIGTERM, as a pod stops), then the daemons as the cluster drops.
        let mut unclean = Vec::new();
        for (i, member) in cluster.members.iter_mut().enumerate() {
            let code = member.peer.process.stop(STOP_TIMEOUT).await?;
            if code != Some(0) {
                unclean.push(format!("peer {i} exited with {code:?}; log:\n{}", member.peer.log_tail()));
            }
        }
        drop(cluster);
        outcome?;
        ensure!(unclean.is_empty(), "real-daemons: a sidecar did not stop cleanly: {}", unclean.join("\n"));
        Ok(())
    })
}

async fn measure(cluster: &TestCluster, count: usize, clients: usize, load_before: serde_json::Value) -> Result<()> {
    let nonce: u64 = rand::random();
    let blocks: Vec<Vec<u8>> =
        (0..count).map(|i| format!("cluster-bench real-daemons {nonce} {i}\n").into_bytes()).collect();
    let cids: Vec<String> = blocks.iter().map(|block| raw_cid(block)).collect();
    let started = Instant::now();
    let puts = cluster.members.iter().map(|member| {
        futures::stream::iter(&blocks)
            .for_each_concurrent(PUTS_IN_FLIGHT, move |block| block_put(member.daemon(), block))
    });
    futures::future::join_all(puts).await;
    println!(
        "   put          {count} blocks into each of the {PEERS} daemons in {:.1} s (not measured)",
        started.elapsed().as_secs_f64()
    );

    let cpu_before = measure::cpu_by_program();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let tasks = (0..clients).map(|c| post_pins(&cluster.members[c % PEERS], &cids, &next));
    let (mut micros, mut errors) = (Vec::new(), Vec::new());
    for (latencies, failed) in futures::future::join_all(tasks).await {
        micros.extend(latencies);
        errors.extend(failed);
    }
    let acked = started.elapsed();
    let latency = Percentiles::of(&mut micros);

    // When each daemon first listed all the CIDs (`None`: not by the deadline). Its `pin/ls` of
    // 2000 pins costs js-ipfs ~70 ms of CPU, so it is asked only once its sidecar's gauge
    // `cluster_ipfs_pins` (what the sidecar's own pin calls did) reaches the count.
    let keys: Vec<CidKey> = cids.iter().map(|cid| key(cid)).collect();
    let deadline = MIN_WAIT.max(WAIT_PER_PIN * count as u32);
    let mut pinned: Vec<Option<Duration>> = vec![None; PEERS];
    while pinned.iter().any(Option::is_none) && started.elapsed() < deadline {
        for (member, pinned) in cluster.members.iter().zip(&mut pinned).filter(|(_, p)| p.is_none()) {
            let reported = member.peer.prometheus("cluster_ipfs_pins").await.unwrap_or(0.0);
            if reported >= count as f64 && held_by(member, &keys).await? == count {
                *pinned = Some(started.elapsed());
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let all_pinned = pinned.iter().copied().collect::<Option<Vec<_>>>().map(|each| each.into_iter().max());
    let all_pinned = all_pinned.flatten();
    let cpu = measure::cpu_spent(&cpu_before, &measure::cpu_by_program(), 0.1);
    let load_after = measure::load();
    let mut held = Vec::new();
    for member in &cluster.members {
        held.push(held_by(member, &keys).await?);
    }

    let rate = |took: Duration| count as f64 / took.as_secs_f64().max(1e-9);
    println!(
        "   acknowledged {} pins in {:.2} s ({:.0} pins/s), {latency}, {} errors",
        micros.len(),
        acked.as_secs_f64(),
        rate(acked),
        errors.len()
    );
    for error in errors.iter().take(5) {
        println!("   FAILED       {error}");
    }
    let each: Vec<String> =
        pinned.iter().map(|t| t.map_or("-".into(), |t| format!("{:.1}", t.as_secs_f64()))).collect();
    match all_pinned {
        Some(took) => println!(
            "   pinned       all {count} in all {PEERS} daemons {:.1} s after the first POST: {:.0} pins/s (each daemon: {} s)",
            took.as_secs_f64(),
            rate(took),
            each.join(" / ")
        ),
        None => println!(
            "   pinned       FAILED: the daemons hold {held:?} of the {count} CIDs after {:.0} s (each daemon: {} s)",
            deadline.as_secs_f64(),
            each.join(" / ")
        ),
    }
    let cpu_line: Vec<String> = cpu.iter().map(|(program, seconds)| format!("{program} {seconds} s")).collect();
    println!("   CPU          {} (measured phase, by program)", cpu_line.join(", "));
    measure::emit(serde_json::json!({
        "scenario": "real-daemons", "peers": PEERS, "pins": count, "clients": clients,
        "acknowledged": {
            "s": secs(acked), "pins_per_s": rate(acked).round(), "latency_ms": latency.json(), "errors": errors.len(),
        },
        "pinned": {
            "s": all_pinned.map(secs), "pins_per_s": all_pinned.map(|t| rate(t).round()),
            "each_daemon_s": pinned.iter().map(|t| t.map(secs)).collect::<Vec<_>>(), "held": held,
        },
        "cpu_s": cpu.iter().map(|(program, seconds)| (program.clone(), serde_json::json!(seconds))).collect::<serde_json::Map<_, _>>(),
        "load_before": load_before, "load_after": load_after,
    }));
    ensure!(errors.is_empty(), "real-daemons: {} of {count} POSTs failed", errors.len());
    ensure!(all_pinned.is_some(), "real-daemons: a daemon did not get every pin (held {held:?} of {count})");
    Ok(())
}

/// One client: `POST /pins/{cid}` on `member`'s REST API, taking the next CID until none is left;
/// each acknowledged POST's latency in µs, and the failures.
async fn post_pins(member: &Member, cids: &[String], next: &AtomicUsize) -> (Vec<u32>, Vec<String>) {
    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
    while let Some(cid) = cids.get(next.fetch_add(1, Ordering::Relaxed)) {
        let sent = Instant::now();
        let answer = async {
            let response = member.peer.request(Method::POST, &format!("/pins/{cid}")).send().await?;
            Ok::<_, reqwest::Error>((response.status(), response.text().await?))
        };
        match answer.await {
            Ok((status, _)) if status.is_success() => latencies.push(sent.elapsed().as_micros() as u32),
            Ok((status, body)) => errors.push(format!("POST /pins/{cid}: {status}: {body}")),
            Err(e) => errors.push(format!("POST /pins/{cid}: {e}")),
        }
    }
    (latencies, errors)
}

/// How many of `keys` the member's daemon lists in its own `pin/ls`.
async fn held_by(member: &Member, keys: &[CidKey]) -> Result<usize> {
    let listing = member.daemon().pin_ls().await?;
    Ok(keys.iter().filter(|k| listing.contains_key(*k)).count())
}
