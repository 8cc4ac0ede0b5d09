//! `cluster-ingest`: `POST /pins/{cid}` throughput and latency against a 3-peer cluster, each peer
//! in its own process (see `cluster.rs`).
//!
//! The load is `ingest`'s (same client, same CIDs, same counting): `--clients` keep-alive clients,
//! client `c` on peer `c % 3`, so two thirds of the writes land on followers and are forwarded to
//! the leader. A write is acknowledged once committed by a quorum and applied on the peer that
//! took it. Afterwards every peer must hold every acknowledged pin: first its `cluster_pins` gauge
//! must reach the count (how long each replica lags is reported), then its whole
//! `GET /allocations` is checked pin by pin. CPU of each peer process comes from `/proc/<pid>/stat`.

use std::time::Duration;

use crate::cluster::{self, LocalCluster, PEERS};
use crate::ingest::{self, LoadFigures};
use crate::measure::{self, round2, secs};
use crate::peer;
use crate::Args;

const P99_TARGET_MS: f64 = 50.0;

pub fn run(args: &Args) -> anyhow::Result<()> {
    // The same load on one peer first: the cluster's figures read as a ratio of it, which holds
    // better than either figure on a shared machine.
    let one_peer = ingest::run(&Args { replication: None, ..args.clone() })?;
    let clients = args.clients.max(1);
    println!(
        "== cluster-ingest: {PEERS} peers (a process each), {clients} clients round-robin over their APIs, {}, replication {}, {:.0} s warm-up + {:.0} s measured ({})",
        ingest::Pace::of(args).describe(),
        args.replication.map_or("the peers' default (-1: every peer)".to_string(), |n| n.to_string()),
        args.warmup,
        args.seconds,
        measure::load_line()
    );
    let load_before = measure::load();
    let paths = ingest::make_paths(clients, args);
    let runtime = cluster::parent_runtime()?;
    let cluster = runtime.block_on(LocalCluster::start(args, "cluster-bench-cluster-ingest-"))?;
    let (leader, statuses) = runtime.block_on(cluster.wait_converged(Duration::from_secs(60)))?;
    if args.replication.is_some() {
        let took = runtime.block_on(cluster.wait_free_space_known(Duration::from_secs(120)))?;
        println!(
            "   allocation   every peer knows every peer's free space ({:.1} s after converging)",
            took.as_secs_f64()
        );
    }
    let entries_before = statuses[leader].last_applied_index.unwrap_or(0);
    let names: Vec<String> = cluster.peers.iter().map(|p| p.options.name.clone()).collect();
    println!(
        "   cluster      {} leads (term {}); peers' pids {:?}",
        names[leader],
        statuses[leader].term,
        cluster.pids()
    );

    let addrs = cluster.peers.iter().map(|p| p.ready.api).collect();
    let run = ingest::run_load(args, addrs, &paths, cluster.pids())?;
    let load_after = measure::load();
    let figures = LoadFigures::of(&run, &paths);
    let acked = figures.acked.len() as u64;
    let peer_cores: Vec<f64> = run.peers.iter().map(|cpu| figures.cores(*cpu)).collect();
    let peers_cpu: Duration = run.peers.iter().sum();
    let us_per_pin = peers_cpu.as_secs_f64() * 1e6 / figures.completed.max(1) as f64;

    // Every replica must reach the acknowledged count, then list every acknowledged pin.
    let after = runtime.block_on(async {
        let has_all = |text: &str| peer::parse_metric(text, "pins") == Some(acked);
        let replicated =
            cluster.wait_metrics("every acknowledged pin in the pinset", Duration::from_secs(120), has_all);
        let replicated = replicated.await;
        let (leader, statuses) = cluster.wait_converged(Duration::from_secs(60)).await?;
        let entries = statuses[leader].last_applied_index.unwrap_or(0).saturating_sub(entries_before);
        // The trackers pin them in each peer's fake daemon behind the API.
        // Each peer pins what is allocated to it: every pin, or with `--replication N` its share
        // of the N copies of each, checked in all below.
        let pinned = |text: &str| {
            (args.replication.is_some() || peer::parse_metric(text, "ipfs_pins") == Some(acked))
                && peer::parse_metric(text, "tracker_queued") == Some(0)
                && peer::parse_metric(text, "tracker_in_progress") == Some(0)
        };
        let trackers = cluster.wait_metrics("every pin pinned by the tracker", Duration::from_secs(120), pinned).await;
        let mut copies = 0;
        for peer in &cluster.peers {
            copies += peer.metric("ipfs_pins").await?;
        }
        anyhow::Ok((replicated, entries, trackers, copies))
    })?;
    let (replicated, entries, trackers, copies) = after;
    // Replication -1 (or none given) means every peer.
    let copies_each = args.replication.filter(|&n| n > 0).map_or(PEERS, |n| (n as usize).min(PEERS));
    let wanted_copies = acked * copies_each as u64;
    let mut listings = Vec::new();
    for peer in &cluster.peers {
        listings.push(ingest::check_listing(peer.ready.api, &figures.acked)?);
    }
    let rss = cluster.rss();
    runtime.block_on(cluster.stop());

    let state_ok = copies == wanted_copies && listings.iter().all(|l| l.ok) && replicated.is_ok();
    figures.print(P99_TARGET_MS);
    println!(
        "   CPU          peers {} cores ({us_per_pin:.0} µs of peer CPU per pin, all peers), client {:.2} cores (one thread); other processes {:.2} cores",
        peer_cores.iter().map(|c| format!("{c:.2}")).collect::<Vec<_>>().join(" + "),
        figures.cores_client,
        figures.cores_others
    );
    for (i, listing) in listings.iter().enumerate() {
        println!(
            "   {:<12} {acked} acknowledged, {} listed by GET /allocations, {} missing: {}{}",
            names[i],
            listing.listed,
            listing.missing,
            if listing.ok { "OK" } else { "FAILED" },
            match (&replicated, &trackers) {
                (Ok(r), Ok(t)) => format!(
                    "; all in its pinset {:.2} s and pinned {:.2} s after the load ended",
                    r[i].as_secs_f64(),
                    t[i].as_secs_f64()
                ),
                _ => String::new(),
            }
        );
    }
    if let Err(e) = &replicated {
        println!("   replication  FAILED: {e}");
    }
    if let Err(e) = &trackers {
        println!("   trackers     did not catch up: {e}");
    }
    println!(
        "   copies       {copies} pinned in the peers' fake daemons for {acked} pins: {}",
        if copies == wanted_copies { "OK".to_string() } else { format!("WRONG, expected {wanted_copies}") }
    );
    println!(
        "   commits      {acked} pins in {entries} Raft entries ({:.0} pins each)",
        acked as f64 / entries.max(1) as f64
    );
    println!(
        "   vs one peer  {:.0} pins/s and {:.0} µs of server CPU per pin in this run: the cluster takes {:.2}x its rate at {:.1}x its CPU per pin",
        one_peer.rate,
        one_peer.server_us_per_pin,
        figures.rate / one_peer.rate.max(1.0),
        us_per_pin / one_peer.server_us_per_pin.max(1.0)
    );
    println!(
        "   memory       {}",
        rss.iter().zip(&names).map(|(r, n)| format!("{n} {r}")).collect::<Vec<_>>().join("; ")
    );
    measure::emit(measure::merge(
        figures.json(args, P99_TARGET_MS),
        serde_json::json!({
            "scenario": "cluster-ingest", "peers": PEERS, "clients": clients,
            "listed": listings.iter().map(|l| l.listed).collect::<Vec<_>>(), "state_ok": state_ok,
            "peer_cpu_cores": peer_cores.iter().map(|c| round2(*c)).collect::<Vec<_>>(),
            "peer_cpu_us_per_pin": us_per_pin.round(), "raft_entries": entries, "pinned_copies": copies,
            "replicated_after_s": replicated.as_ref().ok().map(|r| r.iter().map(|d| secs(*d)).collect::<Vec<_>>()),
            "tracker_catch_up_s": trackers.as_ref().ok().map(|t| t.iter().map(|d| secs(*d)).collect::<Vec<_>>()),
            "rss_mib": rss.iter().map(|r| measure::round1(r.now_mib)).collect::<Vec<_>>(),
            "hwm_mib": rss.iter().map(|r| measure::round1(r.peak_mib)).collect::<Vec<_>>(),
            "one_peer": { "pins_per_s": one_peer.rate.round(), "server_cpu_us_per_pin": one_peer.server_us_per_pin.round() },
            "load_before": load_before, "load_after": load_after,
        }),
    ));
    anyhow::ensure!(
        figures.errors == 0 && state_ok && !figures.ran_out,
        "cluster-ingest: errors or lost pins (see above)"
    );
    Ok(())
}
