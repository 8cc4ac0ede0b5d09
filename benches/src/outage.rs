//! `outage`: how long writes stop when the network fails a 3-peer cluster, beside how many
//! acknowledged writes were lost (none may be).
//!
//! The peers run in this process (`e2e::inprocess`: real libp2p on loopback, durable Raft log and
//! pinset, fake IPFS), their network cut or slowed by `NetFaults` (this machine has no netem).
//! Six clients write new pins back to back, two through each peer, from a steady state on. Faults:
//! - `leader-cut-5s`, `leader-cut-15s`: the leader is cut off, then healed. Figures: cut -> first
//!   write sent after the cut and acknowledged by the other two (`majority_s`), heal -> first write
//!   acknowledged through the old leader (`rejoin_s`), and the longest time without any
//!   acknowledgement on the majority side from its recovery to the end (`worst_gap_s`).
//! - `follower-cut-15s`: a follower cut off, then healed: the longest time without an
//!   acknowledged write through the leader, and whether the return forced an election.
//! - `leader-delay-Nms`: everything reaching the leader arrives N ms late for 8 s: acknowledged
//!   writes per second before and during, the longest gap, whether an election happened.
//!
//! Every write is answered: the slowest answer is reported (bounded by the 10 s commit timeout).

use std::time::{Duration, Instant};

use e2e::inprocess::{longest_outage, missing_on, InProcessCluster, WriteRecord, Writers};
use serde_json::json;

use crate::measure::{self, round2, secs, verdict};
use crate::Args;

const STEADY: Duration = Duration::from_secs(2);
/// Writes after a heal, so the heal is not the last thing the clients saw.
const AFTER_HEAL: Duration = Duration::from_secs(3);
const DELAY_WINDOW: Duration = Duration::from_secs(8);
/// Writes through every peer: two clients each.
const CLIENTS: [usize; 6] = [0, 0, 1, 1, 2, 2];
const TARGET_S: f64 = 3.0;
/// How long the peers may take to apply everything once the clients stopped.
const CATCH_UP: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Fault {
    LeaderCut(Duration),
    FollowerCut(Duration),
    LeaderDelay(Duration),
}

impl Fault {
    fn name(&self) -> String {
        match self {
            Fault::LeaderCut(d) => format!("leader-cut-{}s", d.as_secs()),
            Fault::FollowerCut(d) => format!("follower-cut-{}s", d.as_secs()),
            Fault::LeaderDelay(d) => format!("leader-delay-{}ms", d.as_millis()),
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run_all(args))
}

async fn run_all(args: &Args) -> anyhow::Result<()> {
    let faults = [
        Fault::LeaderCut(Duration::from_secs(5)),
        Fault::LeaderCut(Duration::from_secs(15)),
        Fault::FollowerCut(Duration::from_secs(15)),
        Fault::LeaderDelay(Duration::from_millis(50)),
        Fault::LeaderDelay(Duration::from_millis(100)),
        Fault::LeaderDelay(Duration::from_millis(200)),
    ];
    println!("outage: 3 peers in one process, 6 clients (2 per peer), {} round(s) per fault", args.fault_rounds);
    let mut results = Vec::new();
    for fault in faults {
        for round in 1..=args.fault_rounds {
            let figures = one(fault).await;
            println!("  {:<20} round {round}: {}", fault.name(), summary(&figures));
            results.push(json!({ "fault": fault.name(), "round": round, "figures": figures }));
        }
    }
    let lost: u64 = results.iter().map(|r| r["figures"]["lost"].as_u64().unwrap_or(0)).sum();
    let worst_majority = results.iter().filter_map(|r| r["figures"]["majority_s"].as_f64()).fold(0.0f64, f64::max);
    println!(
        "  leader cut -> majority writes again: worst {worst_majority:.2} s (target <= {TARGET_S} s) {}; acknowledged writes lost: {lost} {}",
        verdict(worst_majority <= TARGET_S),
        verdict(lost == 0)
    );
    println!("  {}", measure::load_line());
    measure::emit(json!({ "scenario": "outage", "lost": lost, "worst_majority_s": worst_majority, "runs": results }));
    anyhow::ensure!(lost == 0, "{lost} acknowledged writes were lost");
    Ok(())
}

async fn one(fault: Fault) -> serde_json::Value {
    let cluster = InProcessCluster::start(3, |_| {}).await;
    let leader = cluster.agreed_leader(&[0, 1, 2]).await;
    let majority: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let term = cluster.nodes[leader].term();
    let writers = Writers::start(&cluster, &CLIENTS);
    tokio::time::sleep(STEADY).await;
    let mut figures = match fault {
        Fault::LeaderCut(length) => {
            let cut = Instant::now();
            cluster.nodes[leader].faults.isolate(true);
            let first = writers.acknowledged_after(cut, &majority, length + Duration::from_secs(60)).await;
            tokio::time::sleep((cut + length).saturating_duration_since(Instant::now())).await;
            let healed = Instant::now();
            cluster.nodes[leader].faults.isolate(false);
            let back = writers.acknowledged_after(healed, &[leader], Duration::from_secs(60)).await;
            tokio::time::sleep(AFTER_HEAL).await;
            let end = Instant::now();
            let records = writers.records();
            json!({
                "majority_s": round2(secs(first - cut)),
                "rejoin_s": round2(secs(back - healed)),
                "worst_gap_s": round2(secs(longest_outage(&records, &majority, first, end))),
            })
        }
        Fault::FollowerCut(length) => {
            let follower = majority[0];
            let cut = Instant::now();
            cluster.nodes[follower].faults.isolate(true);
            tokio::time::sleep(length).await;
            cluster.nodes[follower].faults.isolate(false);
            tokio::time::sleep(AFTER_HEAL).await;
            let records = writers.records();
            json!({
                "worst_gap_s": round2(secs(longest_outage(&records, &[leader], cut, Instant::now()))),
                "election": cluster.nodes[leader].term() != term,
            })
        }
        Fault::LeaderDelay(delay) => {
            let before = writers.records();
            let rate_before = acknowledged_per_second(&before, Instant::now() - STEADY, Instant::now());
            let slowed = Instant::now();
            cluster.nodes[leader].faults.delay_inbound(delay);
            tokio::time::sleep(DELAY_WINDOW).await;
            let end = Instant::now();
            cluster.nodes[leader].faults.delay_inbound(Duration::ZERO);
            let records = writers.records();
            json!({
                "writes_per_s_before": round2(rate_before),
                "writes_per_s_during": round2(acknowledged_per_second(&records, slowed, end)),
                "worst_gap_s": round2(secs(longest_outage(&records, &[0, 1, 2], slowed, end))),
                "election": cluster.nodes[leader].term() != term,
            })
        }
    };
    let records = writers.stop().await;
    // Followers learn of the last commits with the next heartbeat: lost means still missing once
    // every peer applied all the leader has.
    let caught_up = tokio::time::timeout(CATCH_UP, async {
        while !all_applied(&cluster) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    let mut lost = 0;
    for node in &cluster.nodes {
        lost = lost.max(missing_on(node, &records).await.len());
    }
    let slowest = records.iter().map(WriteRecord::took).max().unwrap_or_default();
    let errors = records.iter().filter(|r| !r.acknowledged()).count();
    let extra = figures.as_object_mut().expect("an object");
    extra.insert("acknowledged".into(), json!(records.len() - errors));
    extra.insert("errors".into(), json!(errors));
    extra.insert("slowest_answer_s".into(), json!(round2(secs(slowest))));
    extra.insert("lost".into(), json!(lost));
    extra.insert("caught_up".into(), json!(caught_up));
    cluster.shutdown().await;
    figures
}

/// Whether every peer applied every entry of the longest log.
fn all_applied(cluster: &InProcessCluster) -> bool {
    let statuses: Vec<_> = cluster.nodes.iter().map(|n| n.status()).collect();
    let last = statuses.iter().filter_map(|s| s.last_log_index).max();
    statuses.iter().all(|s| s.last_applied_index == last)
}

fn acknowledged_per_second(records: &[WriteRecord], from: Instant, to: Instant) -> f64 {
    let count = records.iter().filter(|r| r.acknowledged() && r.answered >= from && r.answered <= to).count();
    count as f64 / secs(to - from).max(0.001)
}

fn summary(figures: &serde_json::Value) -> String {
    let object = figures.as_object().expect("an object");
    object.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}
