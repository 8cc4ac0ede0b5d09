//! `ingest`: `POST /pins/{cid}` throughput and latency with concurrent keep-alive clients.
//!
//! One peer (durable state in a temp dir, fake IPFS, real REST server on 127.0.0.1). The client
//! runs on one thread of its own: `--clients` tasks, each on its own HTTP/1.1 connection, post
//! unique random CIDs back to back for `--warmup` then `--seconds`. Requests that complete inside
//! the measured window count; non-2xx and transport errors are errors. Afterwards the pinset is
//! listed (`GET /allocations`) and must hold every acknowledged pin.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use http_body_util::BodyExt;
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

struct ClientRun {
    tasks: Vec<TaskResult>,
    window: Duration,
    /// Process and client-thread CPU and context switches over the window.
    process: Usage,
    client: Usage,
    /// CPU the whole machine used over the window.
    machine: Duration,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let clients = args.clients.max(1);
    let (warmup, window) = (Duration::from_secs_f64(args.warmup), Duration::from_secs_f64(args.seconds));
    println!(
        "== ingest: {clients} clients, {:.0} s warm-up + {:.0} s measured ({})",
        args.warmup,
        args.seconds,
        measure::load_line()
    );
    let load_before = measure::load();

    // CIDs first, before any clock starts: "/pins/<cid>?name=..." per client.
    let per_client = ((MAX_RATE * (args.warmup + args.seconds)) as usize).div_ceil(clients);
    let paths: Vec<Vec<String>> = (0..clients)
        .map(|c| {
            (0..per_client)
                .map(|i| format!("/pins/{}?name=ingest-{c}-{i}", raw_block_cid(&rand::random::<[u8; 32]>())))
                .collect()
        })
        .collect();

    let dir = args.temp_dir("cluster-bench-ingest-")?;
    let runtime = peer::server_runtime()?;
    let ipfs = Arc::new(FakeIpfs::new());
    let peer = runtime.block_on(async {
        let peer = Peer::start(dir.path(), ipfs.clone()).await?;
        peer::wait_all_pinned(&peer.cluster, 0, Duration::from_secs(10)).await?;
        anyhow::Ok(peer)
    })?;
    let addr = peer.addr;

    let paths = Arc::new(paths);
    let load_paths = paths.clone();
    let (run, _) = client::on_client_thread(move || drive(addr, load_paths, warmup, window))?;
    let run = run?;
    let load_after = measure::load();

    // Figures.
    let mut micros: Vec<u32> = run.tasks.iter().flat_map(|t| t.micros.iter().copied()).collect();
    let completed = micros.len() as u64;
    let rate = completed as f64 / run.window.as_secs_f64();
    let latency = Percentiles::of(&mut micros);
    let errors: u64 = run.tasks.iter().map(|t| t.errors).sum();
    let first_error = run.tasks.iter().find_map(|t| t.first_error.clone());
    let ran_out = run.tasks.iter().any(|t| t.ran_out);
    let paths: &Vec<Vec<String>> = &paths;
    let acked: HashSet<&str> =
        run.tasks.iter().enumerate().flat_map(|(c, t)| t.acked.iter().map(move |&i| cid_of(&paths[c][i]))).collect();
    let server = run.process - run.client;
    let server_cpu = server.cpu;
    let cores_server = server_cpu.as_secs_f64() / run.window.as_secs_f64();
    let cores_client = run.client.cpu.as_secs_f64() / run.window.as_secs_f64();
    let cores_others = run.machine.saturating_sub(run.process.cpu).as_secs_f64() / run.window.as_secs_f64();
    let switches_per_pin = server.switches as f64 / completed.max(1) as f64;
    let server_us_per_pin = server_cpu.as_secs_f64() * 1e6 / completed.max(1) as f64;

    // Every acknowledged pin must be in the pinset.
    let (listing, _) = client::on_client_thread(move || client::get_stream(addr, "/allocations", true))?;
    let listing = listing?;
    let mut listed = HashSet::new();
    for line in listing.body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let pin: serde_json::Value = serde_json::from_slice(line)?;
        listed.insert(pin["cid"].as_str().unwrap_or_default().to_string());
    }
    let missing = acked.iter().filter(|cid| !listed.contains(**cid)).count();
    let state_ok = listing.status == 200 && missing == 0 && listed.len() == acked.len();

    // The tracker pins them in the fake daemon behind the API; how long it needs to catch up.
    let catch_up = runtime.block_on(peer::wait_all_pinned(&peer.cluster, acked.len() as u64, Duration::from_secs(120)));
    let transactions = peer::metric(&peer.cluster, "state_transactions").unwrap_or(0);
    let ops = peer::metric(&peer.cluster, "state_ops").unwrap_or(0);
    runtime.block_on(peer.stop());
    drop(runtime);
    drop(dir);

    let rate_ok = rate >= 10_000.0;
    let p99_ok = latency.p99 <= 20.0;
    println!(
        "   throughput   {rate:.0} pins/s ({completed} in {:.2} s)   target >= 10000: {}",
        run.window.as_secs_f64(),
        verdict(rate_ok)
    );
    println!("   latency      {latency}   target p99 <= 20 ms: {}", verdict(p99_ok));
    println!(
        "   errors       {errors}{}",
        first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    println!(
        "   CPU          server {:.2} cores ({server_us_per_pin:.0} µs/pin, {switches_per_pin:.1} context switches/pin), client {:.2} cores (one thread); other processes {cores_others:.2} cores",
        cores_server, cores_client
    );
    println!(
        "   state        {} acknowledged, {} listed by GET /allocations, {missing} missing: {}",
        acked.len(),
        listed.len(),
        if state_ok { "OK" } else { "FAILED" }
    );
    println!(
        "   commits      {ops} ops in {transactions} fsynced transactions ({:.0} ops each)",
        ops as f64 / transactions.max(1) as f64
    );
    match &catch_up {
        Ok(d) => {
            println!("   tracker      all pins pinned in the fake daemon {:.2} s after the load ended", d.as_secs_f64())
        }
        Err(e) => println!("   tracker      did not catch up: {e}"),
    }
    if ran_out {
        println!("   WARNING      a client used up its pre-generated CIDs: raise MAX_RATE");
    }
    measure::emit(serde_json::json!({
        "scenario": "ingest", "clients": clients, "seconds": secs(run.window), "warmup_s": args.warmup,
        "pins_per_s": rate.round(), "completed": completed, "latency_ms": latency.json(), "errors": errors,
        "acknowledged": acked.len(), "listed": listed.len(), "state_ok": state_ok,
        "server_cpu_cores": round2(cores_server), "client_cpu_cores": round2(cores_client), "others_cpu_cores": round2(cores_others),
        "server_cpu_us_per_pin": server_us_per_pin.round(), "server_context_switches_per_pin": round2(switches_per_pin),
        "state_ops": ops, "state_transactions": transactions,
        "tracker_catch_up_s": catch_up.as_ref().ok().map(|d| secs(*d)),
        "targets": { "pins_per_s_ge_10000": rate_ok, "p99_le_20ms": p99_ok },
        "load_before": load_before, "load_after": load_after,
    }));
    anyhow::ensure!(errors == 0 && state_ok && !ran_out, "ingest: errors or lost pins (see above)");
    Ok(())
}

fn cid_of(path: &str) -> &str {
    path.trim_start_matches("/pins/").split('?').next().unwrap_or_default()
}

/// The client side: connects everyone, then runs warm-up and window, measuring CPU at both edges.
async fn drive(
    addr: std::net::SocketAddr,
    paths: Arc<Vec<Vec<String>>>,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<ClientRun> {
    let mut senders = Vec::with_capacity(paths.len());
    for _ in 0..paths.len() {
        senders.push(client::connect(addr).await?);
    }
    let start = Instant::now();
    let (t0, t1) = (start + warmup, start + warmup + window);
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(t0.into()).await;
        let (p0, c0, m0) = (measure::process_usage(), measure::thread_usage(), measure::machine_busy());
        tokio::time::sleep_until(t1.into()).await;
        (measure::process_usage() - p0, measure::thread_usage() - c0, measure::machine_busy().saturating_sub(m0))
    });
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, sender)| tokio::spawn(post_until(sender, paths.clone(), c, t0, t1)))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await?);
    }
    let (process, client, machine) = cpu.await?;
    Ok(ClientRun { tasks: results, window, process, client, machine })
}

/// One client: posts its CIDs one after the other on its connection until `t1`.
async fn post_until(
    mut sender: Sender,
    paths: Arc<Vec<Vec<String>>>,
    c: usize,
    t0: Instant,
    t1: Instant,
) -> TaskResult {
    let mine = &paths[c];
    let mut out = TaskResult { micros: Vec::with_capacity(mine.len()), ..Default::default() };
    for (i, path) in mine.iter().enumerate() {
        let started = Instant::now();
        if started >= t1 {
            return out;
        }
        if let Err(e) = sender.ready().await {
            fail(&mut out, format!("connection: {e}"));
            return out;
        }
        let ok = match sender.send_request(client::request(Method::POST, path)).await {
            Ok(resp) => {
                let status = resp.status();
                match resp.into_body().collect().await {
                    Ok(_) if status.is_success() => true,
                    Ok(body) => {
                        fail(&mut out, format!("{status}: {}", String::from_utf8_lossy(&body.to_bytes())));
                        false
                    }
                    Err(e) => {
                        fail(&mut out, format!("reading the body: {e}"));
                        false
                    }
                }
            }
            Err(e) => {
                fail(&mut out, format!("request: {e}"));
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
