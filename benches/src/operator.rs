//! `operator`: the Kubernetes side, on the test harness's real control plane with the kubelet
//! stand-in (or the cluster `E2E_KUBECONFIG` names): the chart installed by helm with one peer,
//! then rounds of `kubectl scale` 1 -> 5 (OrderedReady: one new pod at a time) and 5 -> 1, until
//! `--joins` joins were seen.
//!
//! - Join: from the moment the new pod's sidecar first answers `GET /health` (the operator can act
//!   from then on) to the moment its ClusterPeer first reads `Joined`; both polled back
//!   to back, [`POLL`] apart. (The pod turns Ready only after it joined: its readiness is the sidecar's `/readyz`,
//!   which wants a member.) Also reported: pod created -> Joined.
//! - Scale 5 -> 1: from `kubectl scale` to one ClusterPeer left and the condemned pods and claims
//!   gone, with a writer pinning through the staying pod all along; the longest window in which
//!   every write was refused, and the refused count.
//! - Whole-cluster restart (after the rounds): scaled to 3, every peer pod deleted at once, so the
//!   StatefulSet (OrderedReady) recreates them one at a time, each once the one before is Ready,
//!   which a peer is only with a live leader, or vouched for by the operator. From the delete to
//!   the three pods Ready again, with a writer pinning through the three pods all along; the
//!   longest window in which every write was refused (the outage).
//! - The operators' resident memory (both replicas, sampled during the run; the standby's too).
//!
//! Real IPFS daemons (js-ipfs) beside every peer: the figures include their start-up on this
//! machine. Debug or release binaries, as built: run it with `--release` for both.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use e2e::k8s::release::wait_for;
use e2e::k8s::{Kube, Release, Writer, Written};

use crate::measure::{self, median, round2, secs, verdict};
use crate::Args;

/// The pause between two polls of a join's two ends (each poll takes a few `kubectl` calls).
const POLL: Duration = Duration::from_millis(50);
/// Generous, for a loaded 2-core machine with IPFS daemons starting.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
const JOIN_TARGET_S: f64 = 3.0;
const REFUSAL_TARGET_S: f64 = 3.0;

/// One join as seen from outside.
struct Join {
    pod: String,
    answering_to_joined: Duration,
    created_to_joined: Duration,
}

pub fn run(args: &Args) -> Result<()> {
    println!("== operator: joins and scale-downs on a real control plane ({}) ==", measure::load_line());
    let kube = Kube::start()?;
    let namespace = format!("bench-operator-{}", std::process::id());
    let release = Release::install(&kube, &namespace, &["peers.replicas=1", "peers.terminationGracePeriodSeconds=60"])?;
    release.wait_joined(&[&Release::pod(0)], 1, STEP_TIMEOUT)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut operators = OperatorMemory::default();

    let (mut joins, mut downs) = (Vec::new(), Vec::<(Duration, Written)>::new());
    while joins.len() < args.joins {
        release.scale(5)?;
        for i in 1..5 {
            let join = runtime.block_on(measure_join(&release, &Release::pod(i), &mut operators))?;
            println!(
                "   join {:>2}: {} answering -> Joined {:.2} s (created -> Joined {:.2} s)",
                joins.len() + 1,
                join.pod,
                join.answering_to_joined.as_secs_f64(),
                join.created_to_joined.as_secs_f64()
            );
            joins.push(join);
        }
        let all: Vec<String> = (0..5).map(Release::pod).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        release.wait_joined(&all, 5, STEP_TIMEOUT)?;

        let writer = Writer::start(&release, &all[..1])?;
        let started = Instant::now();
        release.scale(1)?;
        wait_for("one ClusterPeer left, the other pods and claims gone", STEP_TIMEOUT, || {
            operators.sample(&kube, &release);
            let peers = release.cluster_peers().map_err(|e| e.to_string())?;
            let listed = release.kubectl.run(&["get", "pods,pvc", "-n", &namespace, "-o", "name"]);
            let left = listed.map_err(|e| e.to_string())?;
            let condemned_left = left.lines().filter(|l| all[1..].iter().any(|pod| l.ends_with(pod))).count();
            if peers.len() == 1 && peers[0]["status"]["phase"] == "Joined" && condemned_left == 0 {
                Ok(())
            } else {
                Err(format!("{} ClusterPeers, {condemned_left} condemned pods or claims", peers.len()))
            }
        })?;
        let took = started.elapsed();
        let written = writer.finish();
        println!(
            "   scale 5 -> 1: {:.2} s; writes {} acknowledged, {} refused, longest refusal {:.3} s",
            took.as_secs_f64(),
            written.acknowledged,
            written.refused,
            written.longest_refusal.as_secs_f64()
        );
        if written.acknowledged == 0 {
            bail!("no write was acknowledged during the scale-down");
        }
        downs.push((took, written));
    }
    let restart = whole_cluster_restart(&release)?;
    report(&joins, &downs, &restart, &operators);
    Ok(())
}

/// Scales to 3, deletes every peer pod at once and times their return (all Ready), with a writer.
fn whole_cluster_restart(release: &Release) -> Result<(Duration, Written)> {
    release.scale(3)?;
    let pods: Vec<String> = (0..3).map(Release::pod).collect();
    let pods: Vec<&str> = pods.iter().map(String::as_str).collect();
    release.wait_joined(&pods, 3, STEP_TIMEOUT)?;
    let namespace = release.namespace.as_str();
    let uids = || {
        let path = "jsonpath={.items[*].metadata.uid}";
        let selector = "app.kubernetes.io/component=peer";
        release.kubectl.run(&["get", "pods", "-n", namespace, "-l", selector, "-o", path]).unwrap_or_default()
    };
    let before = uids();
    let writer = Writer::start(release, &pods)?;
    let started = Instant::now();
    let mut delete = vec!["delete", "pods", "-n", namespace, "--wait=false"];
    delete.extend(pods.iter().copied());
    release.kubectl.run(&delete)?;
    wait_for("every peer pod replaced and Ready", STEP_TIMEOUT, || {
        let path = "jsonpath={.status.readyReplicas}";
        let ready = release.kubectl.run(&["get", "statefulset", "ipfs-cluster", "-n", namespace, "-o", path]);
        let ready = ready.map_err(|e| e.to_string())?;
        let replaced = uids().split_whitespace().filter(|uid| !before.contains(uid)).count();
        if replaced == 3 && ready == "3" {
            Ok(())
        } else {
            Err(format!("{replaced} of 3 replaced, {ready:?} Ready"))
        }
    })?;
    let took = started.elapsed();
    let written = writer.finish();
    println!(
        "   whole-cluster restart (3 pods deleted at once, OrderedReady): all Ready again after {:.2} s; writes {} acknowledged, {} refused, longest refusal {:.2} s",
        took.as_secs_f64(),
        written.acknowledged,
        written.refused,
        written.longest_refusal.as_secs_f64()
    );
    Ok((took, written))
}

/// Polls the new pod's sidecar and its ClusterPeer until it is Joined.
async fn measure_join(release: &Release<'_>, pod: &str, operators: &mut OperatorMemory) -> Result<Join> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let (mut created, mut answering) = (None, None);
    let jsonpath = |kind: &str, name: &str, path: &str| {
        let path = format!("jsonpath={path}");
        release.kubectl.run(&["get", kind, name, "-n", &release.namespace, "-o", &path]).unwrap_or_default()
    };
    loop {
        if Instant::now() > deadline {
            bail!("{pod} did not join within {STEP_TIMEOUT:?}:\n{}", release.diagnose());
        }
        operators.sample(release.kube, release);
        let ip = jsonpath("pod", pod, "{.status.podIP}");
        if created.is_none() && !jsonpath("pod", pod, "{.metadata.name}").is_empty() {
            created = Some(Instant::now());
        }
        if answering.is_none() && !ip.is_empty() {
            let health = http.get(format!("http://{ip}:9094/health")).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                answering = Some(Instant::now());
            }
        }
        if let (Some(created), Some(answering)) = (created, answering) {
            if jsonpath("clusterpeer", pod, "{.status.phase}") == "Joined" {
                let joined = Instant::now();
                return Ok(Join {
                    pod: pod.to_string(),
                    answering_to_joined: joined - answering,
                    created_to_joined: joined - created,
                });
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The operator replicas' memory, sampled (kubelet stand-in only: it knows their processes).
#[derive(Default)]
struct OperatorMemory {
    peak_mib: f64,
    last_mib: Vec<f64>,
}

impl OperatorMemory {
    fn sample(&mut self, kube: &Kube, release: &Release) {
        let Some(kubelet) = kube.kubelet() else { return };
        let selector = "app.kubernetes.io/component=operator";
        let path = "jsonpath={.items[*].metadata.name}";
        let names = release.kubectl.run(&["get", "pods", "-n", &release.namespace, "-l", selector, "-o", path]);
        self.last_mib = names
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pod| kubelet.pid(&release.namespace, pod, "operator").ok())
            .map(|pid| measure::Rss::of_pid(pid).now_mib)
            .filter(|mib| mib.is_finite())
            .collect();
        self.peak_mib = self.last_mib.iter().copied().fold(self.peak_mib, f64::max);
    }
}

fn report(joins: &[Join], downs: &[(Duration, Written)], restart: &(Duration, Written), operators: &OperatorMemory) {
    let mut answering: Vec<f64> = joins.iter().map(|j| j.answering_to_joined.as_secs_f64()).collect();
    let mut created: Vec<f64> = joins.iter().map(|j| j.created_to_joined.as_secs_f64()).collect();
    let max = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
    let (join_p50, join_max) = (median(&mut answering), max(&answering));
    let (created_p50, created_max) = (median(&mut created), max(&created));
    let mut scale_s: Vec<f64> = downs.iter().map(|(took, _)| took.as_secs_f64()).collect();
    let longest_refusal = downs.iter().map(|(_, w)| w.longest_refusal).max().unwrap_or_default();
    let refused: usize = downs.iter().map(|(_, w)| w.refused).sum();
    let acknowledged: usize = downs.iter().map(|(_, w)| w.acknowledged).sum();
    println!(
        "   joins ({}): sidecar answering -> Joined p50 {join_p50:.2} s, max {join_max:.2} s (target <= {JOIN_TARGET_S} s: {}); pod created -> Joined p50 {created_p50:.2} s, max {created_max:.2} s",
        joins.len(),
        verdict(join_max <= JOIN_TARGET_S)
    );
    println!(
        "   scale 5 -> 1 ({}): median {:.2} s, max {:.2} s; writes {acknowledged} acknowledged, {refused} refused, longest refusal {:.3} s (target <= {REFUSAL_TARGET_S} s: {})",
        downs.len(),
        median(&mut scale_s),
        max(&scale_s),
        longest_refusal.as_secs_f64(),
        verdict(longest_refusal.as_secs_f64() <= REFUSAL_TARGET_S)
    );
    println!("   operators' RSS: peak {:.1} MiB, at the end {:?} MiB", operators.peak_mib, operators.last_mib);
    measure::emit(serde_json::json!({
        "scenario": "operator",
        "joins": joins.len(),
        "join_s": { "p50": round2(join_p50), "max": round2(join_max) },
        "created_to_joined_s": { "p50": round2(created_p50), "max": round2(created_max) },
        "scale_down_5_to_1_s": scale_s.iter().map(|s| round2(*s)).collect::<Vec<_>>(),
        "writes": { "acknowledged": acknowledged, "refused": refused, "longest_refusal_s": secs(longest_refusal) },
        "whole_cluster_restart": {
            "all_ready_s": secs(restart.0), "acknowledged": restart.1.acknowledged,
            "refused": restart.1.refused, "longest_refusal_s": secs(restart.1.longest_refusal),
        },
        "operator_rss_mib": { "peak": round2(operators.peak_mib), "end": operators.last_mib.iter().map(|m| round2(*m)).collect::<Vec<_>>() },
        "load": measure::load(),
    }));
}
