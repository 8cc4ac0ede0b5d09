//! `startup`: how long a fresh peer process takes to start with a large pinset, and its memory.
//!
//! The parent re-executes this binary (`startup-child`) on the prepared data directory and reads
//! back one line of figures. The child, a fresh process: fills a fake daemon with the same pins (as
//! the real daemon would already hold them; timed and measured apart, since a real daemon is
//! another process), calls `Cluster::start`, then waits for the tracker's start-up rebuild: first
//! until the metrics say every pin reads `pinned` (`ipfs_pins == N`, nothing queued or running),
//! then for the tracker's "rebuilt its queue" log event (its scan of the whole pinset is over).
//! RSS (`VmRSS`, `VmHWM`) is read at each step; statuses of 1,000 random pins are checked.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use multiaddr::Multiaddr;
use sidecar::cluster::Cluster;
use sidecar::identity::Identity;
use sidecar::ipfs::kubo::{KuboClient, KuboConfig};
use sidecar::ipfs::IpfsConnector;
use sidecar::types::TrackerStatus;

use crate::measure::{self, secs, verdict, Rss};
use crate::peer::{self, Fixture};
use crate::Args;

const SPAWNED_AT: &str = "CLUSTER_BENCH_SPAWNED_AT_NS";
const RESULT: &str = "CHILD_RESULT ";
pub const SAMPLE: u64 = 1000;

pub fn run(args: &Args, fixture: &Fixture) -> anyhow::Result<()> {
    println!("== startup: fresh process, {} pins in the state ({})", fixture.pins, measure::load_line());
    let load_before = measure::load();
    let mut child = run_child(args, fixture, None)?;
    let figures = child.clone();
    let f = |k: &str| figures[k].as_f64().unwrap_or(f64::NAN);

    let startup = f("exec_to_main_s") + f("cluster_start_s");
    let ready = f("exec_to_main_s") + f("rebuild_done_s");
    let fake_mib = f("rss_fake_mib") - f("rss_empty_mib");
    let rss_rebuilt = f("rss_rebuilt_mib");
    let hwm = f("hwm_rebuilt_mib");
    let startup_ok = startup <= 10.0 && ready <= 10.0;
    let rss_ok = hwm <= 1024.0;
    println!("   process start -> main            {:.3} s", f("exec_to_main_s"));
    println!(
        "   filling the fake daemon          {:.2} s, {fake_mib:.0} MiB (not counted: another process in real life)",
        f("fake_build_s")
    );
    println!("   Cluster::start returned          {:.3} s after main's call ({:.3} s after process start)   target <= 10 s: {}", f("cluster_start_s"), startup, verdict(startup <= 10.0));
    println!(
        "   all pins read `pinned` (metrics) {:.3} s after Cluster::start returned",
        f("all_pinned_after_start_s")
    );
    println!("   tracker rebuild done (log event) {:.3} s after the call ({ready:.3} s after process start)   target <= 10 s: {}", f("rebuild_done_s"), verdict(ready <= 10.0));
    println!("   statuses sampled                 {}/{SAMPLE} pinned", child["sample_pinned"]);
    println!("   RSS empty process                {:.1} MiB", f("rss_empty_mib"));
    println!(
        "   RSS after Cluster::start         {:.1} MiB (minus the fake: {:.1} MiB)",
        f("rss_started_mib"),
        f("rss_started_mib") - fake_mib
    );
    println!(
        "   RSS after the rebuild            {rss_rebuilt:.1} MiB (minus the fake: {:.1} MiB)",
        rss_rebuilt - fake_mib
    );
    println!(
        "   peak RSS (VmHWM)                 {hwm:.1} MiB (minus the fake: {:.1} MiB)   target <= 1024 MiB: {}",
        hwm - fake_mib,
        verdict(rss_ok)
    );
    let obj = child.as_object_mut().expect("an object");
    obj.insert("scenario".into(), "startup".into());
    obj.insert("startup_s".into(), ((startup * 1000.0).round() / 1000.0).into());
    obj.insert("ready_s".into(), ((ready * 1000.0).round() / 1000.0).into());
    obj.insert("fake_mib".into(), measure::round1(fake_mib).into());
    obj.insert("targets".into(), serde_json::json!({ "startup_le_10s": startup_ok, "hwm_le_1gib": rss_ok }));
    obj.insert("load_before".into(), load_before);
    obj.insert("load_after".into(), measure::load());
    measure::emit(child);
    anyhow::ensure!(f("sample_pinned") as u64 == SAMPLE, "startup: some sampled pins do not read pinned");
    Ok(())
}

/// Runs the measured process on the fixture, beside a fake daemon holding its pins, or beside the
/// real daemon at `ipfs_api`; its figures (JSON).
pub fn run_child(args: &Args, fixture: &Fixture, ipfs_api: Option<&Multiaddr>) -> anyhow::Result<serde_json::Value> {
    let spawned = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let output = Command::new(std::env::current_exe()?)
        .arg("startup-child")
        .arg("--state-dir")
        .arg(fixture.dir.path())
        .args(["--pins", &fixture.pins.to_string(), "--seed", &fixture.seed.to_string()])
        .args(ipfs_api.iter().flat_map(|api| ["--ipfs-api".to_string(), api.to_string()]))
        .args(args.dir.iter().flat_map(|d| [PathBuf::from("--dir"), d.clone()]))
        .env(SPAWNED_AT, spawned.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("running the startup child")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "the startup child failed ({}): {stdout}", output.status);
    let line = stdout.lines().find_map(|l| l.strip_prefix(RESULT)).context("the startup child printed no result")?;
    Ok(serde_json::from_str(line)?)
}

/// The measured process.
pub fn child(args: &Args) -> anyhow::Result<()> {
    let main_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let exec_to_main = std::env::var(SPAWNED_AT)
        .ok()
        .and_then(|v| v.parse::<u128>().ok())
        .map_or(f64::NAN, |spawned| main_at.saturating_sub(spawned) as f64 / 1e9);
    let dir = args.state_dir.clone().context("--state-dir is required")?;
    let (pins, seed) = (args.pins, args.seed);
    let rss_empty = Rss::read();

    let t = Instant::now();
    let ipfs: Arc<dyn IpfsConnector> = match &args.ipfs_api {
        Some(api) => Arc::new(KuboClient::new(KuboConfig { node_multiaddress: api.clone(), ..KuboConfig::default() })?),
        None => Arc::new(peer::fake_with_pins(seed, pins)),
    };
    let fake_build = t.elapsed();
    let rss_fake = Rss::read();
    let identity = Identity::generate();

    let runtime = peer::server_runtime()?;
    let figures = runtime.block_on(async move {
        let called = Instant::now();
        let cluster = Cluster::start(crate::peer::config("bench"), identity, ipfs, &dir).await?;
        let cluster_start = called.elapsed();
        let rss_started = Rss::read();
        let all_pinned = peer::wait_all_pinned(&cluster, pins, Duration::from_secs(300)).await?;
        let rebuild_done = peer::wait_rebuild(1, Duration::from_secs(300)).await?.duration_since(called);
        let rss_rebuilt = Rss::read();
        let mut sample_pinned = 0;
        for _ in 0..SAMPLE {
            let cid = peer::fixture_cid(seed, rand::random::<u64>() % pins.max(1));
            let info = cluster.status(&cid, true).await?;
            if info.peer_map.values().all(|p| p.status == TrackerStatus::Pinned) && !info.peer_map.is_empty() {
                sample_pinned += 1;
            }
        }
        cluster.shutdown().await;
        anyhow::Ok(serde_json::json!({
            "pins": pins,
            "exec_to_main_s": exec_to_main,
            "fake_build_s": secs(fake_build),
            "cluster_start_s": secs(cluster_start),
            "all_pinned_after_start_s": secs(all_pinned),
            "rebuild_done_s": secs(rebuild_done),
            "sample_pinned": sample_pinned,
            "rss_empty_mib": measure::round1(rss_empty.now_mib),
            "rss_fake_mib": measure::round1(rss_fake.now_mib),
            "rss_started_mib": measure::round1(rss_started.now_mib),
            "rss_rebuilt_mib": measure::round1(rss_rebuilt.now_mib),
            "hwm_rebuilt_mib": measure::round1(rss_rebuilt.peak_mib),
        }))
    })?;
    println!("{RESULT}{figures}");
    Ok(())
}
