//! `ingest`: `POST /pins/{cid}` throughput and latency with concurrent keep-alive clients.
//!
//! One peer (durable state in a temp dir, fake IPFS, real REST server on 127.0.0.1). The client
//! runs on one thread of its own: `--clients` tasks, each on its own HTTP/1.1 connection, post
//! unique random CIDs back to back for `--warmup` then `--seconds`. Requests that complete inside
//! the measured window count; non-2xx and transport errors are errors. Afterwards the pinset is
//! listed (`GET /allocations`) and must hold every acknowledged pin.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sidecar::ipfs::fake::{raw_block_cid, FakeIpfs};

use crate::client::{self, Sender};
use crate::measure::{self, round2, secs, verdict, Percentiles, Usage};
use crate::peer::{self, Peer};
use crate::Args;

/// CIDs generated per client beyond what this rate would use: generous, checked at the end.
const MAX_RATE: f64 = 50_000.0;

#[derive(Default)]
struct TaskResult {
    /// Latencies (µs) of requests that completed inside the window.
    micros: Vec<u32>,
    /// Paths acknowledged with a 2xx, over the whole run (warm-up included).
    acked: Vec<usize>,
    errors: u64,
    first_error: Option<String>,
    ran_out: bool,
}

/// What the clients saw, and CPU over the measured window.
pub struct ClientRun {
    tasks: Vec<TaskResult>,
    window: Duration,
    /// Process and client-thread CPU and context switches over the window.
    process: Usage,
    client: Usage,
    /// CPU the whole machine used over the window.
    machine: Duration,
    /// CPU each peer process (`peer_pids`) used over the window.
    pub peers: Vec<Duration>,
}

/// Pre-generated request paths (`/pins/<cid>?name=...`), one list per client.
pub type Paths = Arc<Vec<Vec<String>>>;

/// Random unique CIDs for `clients` clients, enough for [`MAX_RATE`] over warm-up and window;
/// made before any clock starts. With `--replication`, each pin asks for that factor.
pub fn make_paths(clients: usize, args: &Args) -> Paths {
    let per_client = ((MAX_RATE * (args.warmup + args.seconds)) as usize).div_ceil(clients);
    let replication = args.replication.map(|n| format!("&replication-min={n}&replication-max={n}")).unwrap_or_default();
    Arc::new(
        (0..clients)
            .map(|c| {
                (0..per_client)
                    .map(|i| {
                        let cid = raw_block_cid(&rand::random::<[u8; 32]>());
                        format!("/pins/{cid}?name=ingest-{c}-{i}{replication}")
                    })
                    .collect()
            })
            .collect(),
    )
}

/// How the clients pace their requests.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Each client posts back to back: latency is service time at a fixed concurrency.
    Closed,
    /// `rate` pins/s in all, request `k` of the run due at `k / rate` s after the start (client
    /// `k % clients` sends it, as soon as it is free); latency counts from when it was due, so
    /// time spent queued behind a slow answer is counted, not hidden.
    Open { rate: f64 },
}

impl Pace {
    pub fn of(args: &Args) -> Pace {
        args.rate.map_or(Pace::Closed, |rate| Pace::Open { rate })
    }

    /// Words for the summaries.
    pub fn describe(&self) -> String {
        match self {
            Pace::Closed => "closed loop".to_string(),
            Pace::Open { rate } => format!("open loop at {rate:.0} pins/s offered"),
        }
    }
}

/// Runs the load from the one-thread client: client `c` posts to `addrs[c % addrs.len()]`. CPU of
/// the processes `peer_pids` is sampled at the window's edges too (peers in their own processes).
pub fn run_load(args: &Args, addrs: Vec<SocketAddr>, paths: &Paths, peer_pids: Vec<u32>) -> anyhow::Result<ClientRun> {
    let (warmup, window) = (Duration::from_secs_f64(args.warmup), Duration::from_secs_f64(args.seconds));
    let paths = paths.clone();
    let pace = Pace::of(args);
    client::on_client_thread(move || drive(addrs, paths, pace, warmup, window, peer_pids))?.0
}

/// The figures of a [`ClientRun`] that do not depend on where the peers run.
pub struct LoadFigures {
    pub completed: u64,
    pub rate: f64,
    pub latency: Percentiles,
    pub errors: u64,
    pub first_error: Option<String>,
    pub ran_out: bool,
    /// CIDs acknowledged with a 2xx, warm-up included.
    pub acked: HashSet<String>,
    pub window: Duration,
    pub cores_client: f64,
    /// CPU of other processes of the machine: all but this one and the peer processes.
    pub cores_others: f64,
}

impl LoadFigures {
    pub fn of(run: &ClientRun, paths: &Paths) -> LoadFigures {
        let mut micros: Vec<u32> = run.tasks.iter().flat_map(|t| t.micros.iter().copied()).collect();
        let completed = micros.len() as u64;
        let window_s = run.window.as_secs_f64();
        let acked = run
            .tasks
            .iter()
            .enumerate()
            .flat_map(|(c, t)| t.acked.iter().map(move |&i| cid_of(&paths[c][i]).to_string()))
            .collect();
        let peers: Duration = run.peers.iter().sum();
        LoadFigures {
            completed,
            rate: completed as f64 / window_s,
            latency: Percentiles::of(&mut micros),
            errors: run.tasks.iter().map(|t| t.errors).sum(),
            first_error: run.tasks.iter().find_map(|t| t.first_error.clone()),
            ran_out: run.tasks.iter().any(|t| t.ran_out),
            acked,
            window: run.window,
            cores_client: run.client.cpu.as_secs_f64() / window_s,
            cores_others: run.machine.saturating_sub(run.process.cpu + peers).as_secs_f64() / window_s,
        }
    }

    /// Cores a CPU time over the window amounts to.
    pub fn cores(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / self.window.as_secs_f64()
    }

    pub fn rate_ok(&self) -> bool {
        self.rate >= 10_000.0
    }

    pub fn p99_ok(&self, target_ms: f64) -> bool {
        self.latency.p99 <= target_ms
    }

    /// Throughput, latency and errors, against the targets.
    pub fn print(&self, p99_target_ms: f64) {
        println!(
            "   throughput   {:.0} pins/s ({} in {:.2} s)   target >= 10000: {}",
            self.rate,
            self.completed,
            self.window.as_secs_f64(),
            verdict(self.rate_ok())
        );
        println!(
            "   latency      {}   target p99 <= {p99_target_ms} ms: {}",
            self.latency,
            verdict(self.p99_ok(p99_target_ms))
        );
        println!(
            "   errors       {}{}",
            self.errors,
            self.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        if self.ran_out {
            println!("   WARNING      a client used up its pre-generated CIDs: raise MAX_RATE");
        }
    }

    /// The figures every ingest JSON line carries.
    pub fn json(&self, args: &Args, p99_target_ms: f64) -> serde_json::Map<String, serde_json::Value> {
        let serde_json::Value::Object(map) = serde_json::json!({
            "seconds": secs(self.window), "warmup_s": args.warmup,
            "offered_pins_per_s": args.rate, "replication": args.replication,
            "pins_per_s": self.rate.round(), "completed": self.completed, "latency_ms": self.latency.json(),
            "errors": self.errors, "acknowledged": self.acked.len(),
            "client_cpu_cores": round2(self.cores_client), "others_cpu_cores": round2(self.cores_others),
            "targets": { "pins_per_s_ge_10000": self.rate_ok(), format!("p99_le_{p99_target_ms}ms"): self.p99_ok(p99_target_ms) },
        }) else {
            unreachable!("an object")
        };
        map
    }
}

/// What `GET /allocations` of one peer lists against the acknowledged pins.
pub struct Listing {
    pub listed: usize,
    pub missing: usize,
    /// 200, every acknowledged pin listed and no other.
    pub ok: bool,
}

/// Reads the whole `GET /allocations` of the peer at `addr` and checks it against `acked`.
pub fn check_listing(addr: SocketAddr, acked: &HashSet<String>) -> anyhow::Result<Listing> {
    let (listing, _) = client::on_client_thread(move || client::get_stream(addr, "/allocations", true))?;
    let listing = listing?;
    let mut listed = HashSet::new();
    for line in listing.body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let pin: serde_json::Value = serde_json::from_slice(line)?;
        listed.insert(pin["cid"].as_str().unwrap_or_default().to_string());
    }
    let missing = acked.iter().filter(|cid| !listed.contains(*cid)).count();
    let ok = listing.status == 200 && missing == 0 && listed.len() == acked.len();
    Ok(Listing { listed: listed.len(), missing, ok })
}

/// One peer's figures, which the cluster scenarios set theirs beside.
pub struct OnePeer {
    pub rate: f64,
    pub server_us_per_pin: f64,
}

pub fn run(args: &Args) -> anyhow::Result<OnePeer> {
    const P99_TARGET_MS: f64 = 20.0;
    let clients = args.clients.max(1);
    println!(
        "== ingest: {clients} clients, {}, {:.0} s warm-up + {:.0} s measured ({})",
        Pace::of(args).describe(),
        args.warmup,
        args.seconds,
        measure::load_line()
    );
    let load_before = measure::load();
    let paths = make_paths(clients, args);

    let dir = args.temp_dir("cluster-bench-ingest-")?;
    let runtime = peer::server_runtime()?;
    let ipfs = Arc::new(FakeIpfs::new());
    let peer = runtime.block_on(async {
        let peer = Peer::start(dir.path(), ipfs.clone()).await?;
        peer::wait_all_pinned(&peer.cluster, 0, Duration::from_secs(10)).await?;
        anyhow::Ok(peer)
    })?;
    let addr = peer.addr;
    let entries_before = peer::metric(&peer.cluster, "raft_last_applied_index").unwrap_or(0);

    let run = run_load(args, vec![addr], &paths, Vec::new())?;
    let load_after = measure::load();
    let figures = LoadFigures::of(&run, &paths);
    let server = run.process - run.client;
    let cores_server = figures.cores(server.cpu);
    let switches_per_pin = server.switches as f64 / figures.completed.max(1) as f64;
    let server_us_per_pin = server.cpu.as_secs_f64() * 1e6 / figures.completed.max(1) as f64;

    // Every acknowledged pin must be in the pinset.
    let listing = check_listing(addr, &figures.acked)?;

    // The tracker pins them in the fake daemon behind the API; how long it needs to catch up.
    let acked = figures.acked.len() as u64;
    let catch_up = runtime.block_on(peer::wait_all_pinned(&peer.cluster, acked, Duration::from_secs(120)));
    let entries = peer::metric(&peer.cluster, "raft_last_applied_index").unwrap_or(0).saturating_sub(entries_before);
    runtime.block_on(peer.stop());
    drop(runtime);
    drop(dir);

    figures.print(P99_TARGET_MS);
    println!(
        "   CPU          server {cores_server:.2} cores ({server_us_per_pin:.0} µs/pin, {switches_per_pin:.1} context switches/pin), client {:.2} cores (one thread); other processes {:.2} cores",
        figures.cores_client, figures.cores_others
    );
    println!(
        "   state        {acked} acknowledged, {} listed by GET /allocations, {} missing: {}",
        listing.listed,
        listing.missing,
        if listing.ok { "OK" } else { "FAILED" }
    );
    println!(
        "   commits      {acked} pins in {entries} Raft entries ({:.0} pins each)",
        acked as f64 / entries.max(1) as f64
    );
    match &catch_up {
        Ok(d) => {
            println!("   tracker      all pins pinned in the fake daemon {:.2} s after the load ended", d.as_secs_f64())
        }
        Err(e) => println!("   tracker      did not catch up: {e}"),
    }
    measure::emit(measure::merge(
        figures.json(args, P99_TARGET_MS),
        serde_json::json!({
            "scenario": "ingest", "clients": clients, "listed": listing.listed, "state_ok": listing.ok,
            "server_cpu_cores": round2(cores_server), "server_cpu_us_per_pin": server_us_per_pin.round(),
            "server_context_switches_per_pin": round2(switches_per_pin), "raft_entries": entries,
            "tracker_catch_up_s": catch_up.as_ref().ok().map(|d| secs(*d)),
            "load_before": load_before, "load_after": load_after,
        }),
    ));
    anyhow::ensure!(figures.errors == 0 && listing.ok && !figures.ran_out, "ingest: errors or lost pins (see above)");
    Ok(OnePeer { rate: figures.rate, server_us_per_pin })
}

fn cid_of(path: &str) -> &str {
    path.trim_start_matches("/pins/").split('?').next().unwrap_or_default()
}

/// The client side: connects everyone (client `c` to `addrs[c % addrs.len()]`), then runs warm-up
/// and window, measuring CPU at both edges.
async fn drive(
    addrs: Vec<SocketAddr>,
    paths: Paths,
    pace: Pace,
    warmup: Duration,
    window: Duration,
    peer_pids: Vec<u32>,
) -> anyhow::Result<ClientRun> {
    let mut senders = Vec::with_capacity(paths.len());
    for c in 0..paths.len() {
        senders.push(client::connect(addrs[c % addrs.len()]).await?);
    }
    let start = Instant::now();
    let (t0, t1) = (start + warmup, start + warmup + window);
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(t0.into()).await;
        let peers_cpu = || peer_pids.iter().map(|&pid| measure::pid_cpu(pid)).collect::<Vec<_>>();
        let (p0, c0, m0, peers0) =
            (measure::process_usage(), measure::thread_usage(), measure::machine_busy(), peers_cpu());
        tokio::time::sleep_until(t1.into()).await;
        let peers = peers_cpu().into_iter().zip(peers0).map(|(now, then)| now.saturating_sub(then)).collect();
        (measure::process_usage() - p0, measure::thread_usage() - c0, measure::machine_busy().saturating_sub(m0), peers)
    });
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, sender)| tokio::spawn(post_until(sender, paths.clone(), c, pace, start, t0, t1)))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await?);
    }
    let (process, client, machine, peers) = cpu.await?;
    Ok(ClientRun { tasks: results, window, process, client, machine, peers })
}

/// One client: posts its CIDs one after the other on its connection until `t1`, back to back or
/// each when it is due (`pace`, counted from `start`).
async fn post_until(
    mut sender: Sender,
    paths: Paths,
    c: usize,
    pace: Pace,
    start: Instant,
    t0: Instant,
    t1: Instant,
) -> TaskResult {
    let mine = &paths[c];
    let clients = paths.len();
    let mut out = TaskResult { micros: Vec::with_capacity(mine.len()), ..Default::default() };
    for (i, path) in mine.iter().enumerate() {
        let started = match pace {
            Pace::Closed => Instant::now(),
            Pace::Open { rate } => start + Duration::from_secs_f64((i * clients + c) as f64 / rate),
        };
        if started >= t1 {
            return out;
        }
        tokio::time::sleep_until(started.into()).await;
        let ok = match client::post(&mut sender, path).await {
            Ok(()) => true,
            Err(client::PostError::Connection(e)) => {
                fail(&mut out, e);
                return out;
            }
            Err(client::PostError::Request(e)) => {
                fail(&mut out, e);
                false
            }
        };
        let done = Instant::now();
        if ok {
            out.acked.push(i);
        }
        if ok && done >= t0 && done <= t1 {
            out.micros.push(done.duration_since(started).as_micros().min(u32::MAX as u128) as u32);
        }
    }
    out.ran_out = true;
    out
}

fn fail(out: &mut TaskResult, why: String) {
    out.errors += 1;
    out.first_error.get_or_insert(why);
}
