//! `cluster-bench`: figures for sidecar peers on durable storage with the in-process fake IPFS:
//! one peer in this process (`ingest`, `startup`, `stream`, `all`), or a 3-peer loopback cluster
//! with each peer in its own process (`cluster-ingest`, `failover`, `catch-up`, `cluster`), or a
//! 3-peer cluster in this process whose network fails (`outage`), or the operator on a real
//! Kubernetes control plane (`operator`).
//!
//! `cargo run --release -p bench -- <scenario> [flags]`; see `benches/README.md`.
//! Each scenario prints a human summary and then one line of JSON with its figures.

mod catch_up;
mod client;
mod cluster;
mod cluster_ingest;
mod failover;
mod ingest;
mod machine;
mod measure;
mod operator;
mod outage;
mod peer;
mod pins;
mod real_daemons;
mod startup;
mod startup_daemon;
mod stream;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// The peers measured here (in this process, or re-executed as `peer-child`) allocate as
/// `cluster-sidecar` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// `POST /pins/{cid}` throughput and latency with concurrent keep-alive clients.
    Ingest,
    /// Start-up time and RSS of a fresh process with a large pinset.
    Startup,
    /// Start-up of a fresh process with a `--pins` pinset beside a real js-ipfs daemon holding the
    /// same pins, against the daemon's own `pin/ls` of them.
    StartupDaemon,
    /// Streaming `GET /allocations` and `GET /pins?local=true` of a large pinset.
    Stream,
    /// The three, sharing one large pinset.
    All,
    /// 3 peers in their own processes: `POST /pins/{cid}` throughput and latency with the clients
    /// spread round-robin over the peers' REST APIs; every peer must list every acknowledged pin.
    ClusterIngest,
    /// 3 peers: one client writes to a follower while the leader is killed (SIGKILL); the time to
    /// the next acknowledged write, then the killed peer restarted and rejoined; `--rounds` times.
    Failover,
    /// A first peer starts a cluster on a `--pins` pinset; the time two joining peers take to hold
    /// it all (Raft snapshot), and every peer's RSS once caught up.
    CatchUp,
    /// cluster-ingest, failover and catch-up, one after the other.
    Cluster,
    /// 3 peers in this process whose network fails: how long writes stop when the leader is cut
    /// off (5 s, 15 s), a follower is cut off, or the leader's link is slowed; acknowledged
    /// writes lost (none may be).
    Outage,
    /// The operator on a real Kubernetes control plane (the test harness's, or `E2E_KUBECONFIG`'s):
    /// pod -> ClusterPeer Joined over `--joins` joins, scale 5 -> 1 with a writer (the longest
    /// refusal), the operators' memory. Real IPFS daemons; see `benches/README.md`.
    Operator,
    /// The Pin controller on a real Kubernetes control plane: `--latency-pins` Pins one at a time
    /// (created -> Pinned), then `--bulk-pins` at once (all Pinned, the operator's memory, API
    /// server requests per Pin). Real IPFS daemons holding the content; see `benches/README.md`.
    Pins,
    /// 3 real peer processes, each beside its own real js-ipfs daemon holding the content:
    /// `--daemon-pins` pins POSTed by `--clients` clients round-robin over the peers; pins/s until
    /// acknowledged and until pinned in every daemon.
    RealDaemons,
    /// Internal: the measured child process of `startup`.
    #[value(hide = true)]
    StartupChild,
    /// Internal: one cluster peer in its own process (the cluster scenarios start three).
    #[value(hide = true)]
    PeerChild,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "cluster-bench",
    about = "Sidecar benchmarks (durable state, fake IPFS): one peer, or a 3-peer loopback cluster of processes"
)]
pub struct Args {
    scenario: Scenario,
    /// ingest, cluster-ingest and real-daemons: concurrent clients, each on its own keep-alive HTTP/1.1 connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// ingest and cluster-ingest: measured duration, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// ingest and cluster-ingest: warm-up before the measurement, in seconds (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// ingest and cluster-ingest: an open loop offering this many pins/s in all, spread over the
    /// clients, each request's latency counted from when it was due to be sent (default: a closed
    /// loop, each client posting back to back).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// ingest and cluster-ingest: each pin's replication factor (`replication-min` and
    /// `replication-max`; default: the peers', -1 = every peer).
    #[arg(long)]
    pub replication: Option<i32>,
    /// startup, stream and catch-up: pins in the state.
    #[arg(long, default_value_t = 1_000_000)]
    pub pins: u64,
    /// failover: how many times the leader is killed (and restarted).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// operator: joins to measure (rounds of scale 1 -> 5 -> 1, four joins each).
    #[arg(long, default_value_t = 10)]
    pub joins: usize,
    /// pins: Pins created one at a time, each once the one before is Pinned.
    #[arg(long, default_value_t = 100)]
    pub latency_pins: usize,
    /// pins: Pins created at once.
    #[arg(long, default_value_t = 10_000)]
    pub bulk_pins: usize,
    /// real-daemons: pins, the content put into every daemon first.
    #[arg(long, default_value_t = 2000)]
    pub daemon_pins: usize,
    /// outage: how many times each fault is tried.
    #[arg(long, default_value_t = 2)]
    pub fault_rounds: usize,
    /// Where the temporary data directories go (default: the system temp dir). Use a real disk:
    /// the state is fsynced.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Cluster scenarios: the peers' Raft heartbeat interval, in ms (default: the sidecar's).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Cluster scenarios: the peers' election timeout range, in ms, as `MIN-MAX` (default: the
    /// sidecar's). openraft 0.9 lets a follower of a known leader campaign only after
    /// MAX + a random value in the range.
    #[arg(long, value_parser = parse_range)]
    pub election_timeout_ms: Option<(u64, u64)>,
    /// Cluster scenarios: keep the peers' logs (`peer<N>.log`, appended across restarts) in this
    /// directory instead of the temp dir. What they log: `CLUSTER_BENCH_LOG` (an `EnvFilter`,
    /// default `warn`).
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// startup-child and peer-child: the data directory (holding the prepared state).
    #[arg(long, hide = true)]
    pub state_dir: Option<PathBuf>,
    /// startup-child and peer-child: the seed the fixture's CIDs were made from.
    #[arg(long, hide = true, default_value_t = 0)]
    pub seed: u64,
    /// peer-child: its peer name.
    #[arg(long, hide = true, default_value = "bench")]
    pub peername: String,
    /// peer-child: the cluster secret, 64 hex digits.
    #[arg(long, hide = true)]
    pub secret: Option<String>,
    /// peer-child: the cluster listen address.
    #[arg(long, hide = true, default_value = "/ip4/127.0.0.1/tcp/0")]
    pub listen: String,
    /// peer-child: a member to join through (none: start a new cluster).
    #[arg(long, hide = true)]
    pub bootstrap: Vec<String>,
    /// startup-child: the real daemon's RPC API (default: a fake daemon holding the fixture's pins).
    #[arg(long, hide = true)]
    pub ipfs_api: Option<multiaddr::Multiaddr>,
    /// peer-child: pins of fixture `--seed` its fake daemon holds from the start.
    #[arg(long, hide = true, default_value_t = 0)]
    pub fake_pins: u64,
}

/// A rate in pins/s: a finite number above zero.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        Ok(_) => Err("the rate must be a number of pins/s above 0".into()),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

/// `MIN-MAX`, both in ms, MIN < MAX.
fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (min, max) = text.split_once('-').ok_or("expected MIN-MAX, e.g. 500-1000")?;
    let (min, max): (u64, u64) =
        (min.trim().parse().map_err(|e| format!("MIN: {e}"))?, max.trim().parse().map_err(|e| format!("MAX: {e}"))?);
    if min >= max {
        return Err("MIN must be below MAX".into());
    }
    Ok((min, max))
}

impl Args {
    pub fn temp_dir(&self, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
        let base = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        Ok(tempfile::Builder::new().prefix(prefix).tempdir_in(base)?)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    peer::init_logging();
    match args.scenario {
        Scenario::StartupChild => return startup::child(&args),
        Scenario::PeerChild => return cluster::child(&args),
        _ => {}
    }
    machine::start(args.dir.clone().unwrap_or_else(std::env::temp_dir));
    match args.scenario {
        Scenario::Ingest => {
            ingest::run(&args)?;
        }
        Scenario::Startup => {
            let fixture = peer::Fixture::build(&args)?;
            startup::run(&args, &fixture)?;
        }
        Scenario::StartupDaemon => {
            let fixture = peer::Fixture::build(&args)?;
            startup_daemon::run(&args, &fixture)?;
        }
        Scenario::Stream => {
            let fixture = peer::Fixture::build(&args)?;
            stream::run(&args, &fixture)?;
        }
        Scenario::All => {
            ingest::run(&args)?;
            let fixture = peer::Fixture::build(&args)?;
            startup::run(&args, &fixture)?;
            stream::run(&args, &fixture)?;
        }
        Scenario::ClusterIngest => cluster_ingest::run(&args)?,
        Scenario::Failover => failover::run(&args)?,
        Scenario::CatchUp => catch_up::run(&args)?,
        Scenario::Outage => outage::run(&args)?,
        Scenario::Operator => operator::run(&args)?,
        Scenario::Pins => pins::run(&args)?,
        Scenario::RealDaemons => real_daemons::run(&args)?,
        Scenario::Cluster => {
            // Each one, even when an earlier one failed; the failures at the end.
            let failures: Vec<String> = [cluster_ingest::run, failover::run, catch_up::run]
                .iter()
                .filter_map(|scenario| scenario(&args).err())
                .map(|e| {
                    println!("   FAILED: {e:#}");
                    format!("{e:#}")
                })
                .collect();
            anyhow::ensure!(
                failures.is_empty(),
                "{} of the 3 cluster scenarios failed:\n{}",
                failures.len(),
                failures.join("\n")
            );
        }
        Scenario::StartupChild | Scenario::PeerChild => unreachable!("handled above"),
    }
    Ok(())
}
