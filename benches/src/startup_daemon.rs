//! `startup-daemon`: a fresh peer process starting with a `--pins` pinset beside a real js-ipfs
//! daemon that already holds the same pins, against the daemon's own listing of them.
//!
//! - Not timed: the fixture (`startup`'s, every pin on every peer); the daemon's repository filled
//!   offline with the same CIDs (`fill.mjs`: raw blocks, each pinned recursively); the daemon
//!   started on it.
//! - The daemon's own listing: the requests the peer's tracker makes at start-up (`pin/ls` with
//!   `stream=true`, `type=recursive` then `type=direct`), read to their end, twice; the faster
//!   one is the reference.
//! - The peer: `startup`'s child process with the real daemon's API instead of a fake: process
//!   start -> `Cluster::start` returned, the tracker's start-up rebuild done (which includes its
//!   own `pin/ls`); ready = both. Target: ready within the daemon's listing plus 20 %.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use e2e::ipfs_daemon::{self, IpfsDaemon};
use futures::StreamExt;

use crate::measure::{self, secs, verdict};
use crate::peer::Fixture;
use crate::startup;
use crate::Args;

/// The peer may take this much longer than the daemon's own listing.
const SLACK: f64 = 1.2;

/// One listing of the daemon's pins, as the tracker asks for them.
struct Listing {
    took: Duration,
    recursive: u64,
    direct: u64,
}

pub fn run(args: &Args, fixture: &Fixture) -> anyhow::Result<()> {
    let pins = fixture.pins;
    println!(
        "== startup-daemon: fresh process, {pins} pins in the state and in a real js-ipfs daemon ({})",
        measure::load_line()
    );
    let load_before = measure::load();
    let repo_dir = args.temp_dir("cluster-bench-startup-daemon-ipfs-")?;
    let repo = repo_dir.path().join("repo");
    let filled = ipfs_daemon::fill(&repo, fixture.seed, pins)?;
    println!(
        "   filled       the daemon's repository with {pins} pinned blocks in {:.1} s (not timed)",
        filled.as_secs_f64()
    );
    let daemon = IpfsDaemon::start(&repo)?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listings = (0..2).map(|_| runtime.block_on(list(&daemon.api_url()))).collect::<anyhow::Result<Vec<_>>>()?;
    for (n, l) in listings.iter().enumerate() {
        println!(
            "   pin/ls       the daemon's own listing #{}: {} recursive + {} direct pins in {:.2} s",
            n + 1,
            l.recursive,
            l.direct,
            l.took.as_secs_f64()
        );
    }
    let best = listings.iter().map(|l| l.took).min().context("no listing")?;
    anyhow::ensure!(
        listings.iter().all(|l| l.recursive == pins),
        "the daemon does not list the {pins} pins it was filled with"
    );

    let mut child = startup::run_child(args, fixture, Some(&daemon.api_multiaddr()))?;
    daemon.stop();
    let figures = child.clone();
    let f = |k: &str| figures[k].as_f64().unwrap_or(f64::NAN);
    let started = f("exec_to_main_s") + f("cluster_start_s");
    let rebuilt = f("exec_to_main_s") + f("rebuild_done_s");
    // Ready: `Cluster::start` returned and every status is known (whichever comes last).
    let ready = started.max(rebuilt);
    let limit = best.as_secs_f64() * SLACK;
    let ok = ready <= limit;
    println!(
        "   peer         Cluster::start returned {started:.2} s, the tracker's rebuild (its pin/ls included) done {rebuilt:.2} s after its process started"
    );
    println!(
        "                ready (both) {ready:.2} s: {:.2}x the daemon's own listing   target <= the listing + 20 % ({limit:.2} s): {}",
        ready / best.as_secs_f64(),
        verdict(ok)
    );
    println!("   statuses     {}/{} sampled pins read pinned", child["sample_pinned"], startup::SAMPLE);
    let sampled = f("sample_pinned") as u64;
    let obj = child.as_object_mut().context("the child's figures are an object")?;
    obj.insert("scenario".into(), "startup-daemon".into());
    obj.insert("fill_s".into(), secs(filled).into());
    obj.insert("daemon_listing_s".into(), listings.iter().map(|l| secs(l.took)).collect::<Vec<_>>().into());
    obj.insert("startup_s".into(), measure::round2(started).into());
    obj.insert("rebuilt_s".into(), measure::round2(rebuilt).into());
    obj.insert("ready_s".into(), measure::round2(ready).into());
    obj.insert("ready_over_listing".into(), measure::round2(ready / best.as_secs_f64()).into());
    obj.insert("targets".into(), serde_json::json!({ "ready_le_listing_plus_20pct": ok }));
    obj.insert("load_before".into(), load_before);
    obj.insert("load_after".into(), measure::load());
    measure::emit(child);
    anyhow::ensure!(sampled == startup::SAMPLE, "startup-daemon: some sampled pins do not read pinned");
    Ok(())
}

/// `pin/ls?stream=true` of both types, read to the end; lines counted.
async fn list(api: &str) -> anyhow::Result<Listing> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut counts = [0u64; 2];
    for (kind, count) in ["recursive", "direct"].into_iter().zip(counts.iter_mut()) {
        let url = format!("{api}/api/v0/pin/ls?stream=true&type={kind}");
        let response = client.post(url).send().await?.error_for_status()?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            *count += chunk?.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    Ok(Listing { took: started.elapsed(), recursive: counts[0], direct: counts[1] })
}
