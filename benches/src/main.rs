//! `cluster-bench`: figures for one sidecar peer on durable storage with the in-process fake IPFS.
//!
//! `cargo run --release -p bench -- <ingest|startup|stream|all> [flags]`; see `benches/README.md`.
//! Each scenario prints a human summary and then one line of JSON with its figures.

mod client;
mod ingest;
mod measure;
mod peer;
mod startup;
mod stream;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// `POST /pins/{cid}` throughput and latency with concurrent keep-alive clients.
    Ingest,
    /// Start-up time and RSS of a fresh process with a large pinset.
    Startup,
    /// Streaming `GET /allocations` and `GET /pins?local=true` of a large pinset.
    Stream,
    /// The three, sharing one large pinset.
    All,
    /// Internal: the measured child process of `startup`.
    #[value(hide = true)]
    StartupChild,
}

#[derive(Debug, Parser)]
#[command(name = "cluster-bench", about = "Sidecar peer benchmarks (one peer, durable state, fake IPFS)")]
pub struct Args {
    scenario: Scenario,
    /// ingest: concurrent clients, each on its own keep-alive HTTP/1.1 connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// ingest: measured duration, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// ingest: warm-up before the measurement, in seconds (its requests are not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// startup and stream: pins in the state.
    #[arg(long, default_value_t = 1_000_000)]
    pub pins: u64,
    /// Where the temporary data directories go (default: the system temp dir). Use a real disk:
    /// the state is fsynced.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// startup-child: the data directory holding the prepared state.
    #[arg(long, hide = true)]
    pub state_dir: Option<PathBuf>,
    /// startup-child: the seed the pins' CIDs were made from.
    #[arg(long, hide = true, default_value_t = 0)]
    pub seed: u64,
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
    if args.scenario == Scenario::StartupChild {
        return startup::child(&args);
    }
    match args.scenario {
        Scenario::Ingest => ingest::run(&args)?,
        Scenario::Startup => {
            let fixture = peer::Fixture::build(&args)?;
            startup::run(&args, &fixture)?;
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
        Scenario::StartupChild => unreachable!("handled above"),
    }
    Ok(())
}
