//! `pins`: the Pin controller on the test harness's real control plane with the kubelet stand-in
//! (the chart installed by helm, 3 peers, each a real js-ipfs daemon beside our sidecar), with
//! the content put into every daemon first, so pinning fetches nothing ("a fast IPFS").
//!
//! - Latency: `--latency-pins` Pins created one after the other, each once the one before is
//!   Pinned; from the create call to the watch event that shows it Pinned.
//! - Bulk: `--bulk-pins` Pins created at once (32 create calls in flight), until every one is
//!   Pinned; the operator replicas' peak RSS; what the API server served on Pins and events
//!   during it (its own `apiserver_request_total`), per Pin, the bench's creates left out.
//!
//! Debug or release binaries, as built: run it with `--release` for both.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use e2e::common::unique_bytes;
use e2e::k8s::{Kube, PodIpfs, Release};
use futures::{StreamExt, TryStreamExt};
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use operator::crd::{Pin, PinPhase, PinSpec};

use crate::measure::{self, round2, verdict};
use crate::Args;

const STEP_TIMEOUT: Duration = Duration::from_secs(600);
const LATENCY_TARGET_P50_S: f64 = 1.0;
const LATENCY_TARGET_P99_S: f64 = 3.0;
const BULK_TARGET_S: f64 = 60.0;
const RSS_TARGET_MIB: f64 = 200.0;
/// Create calls in flight during the bulk phase.
const CREATES_IN_FLIGHT: usize = 32;

/// When each Pin was first seen Pinned, as the watch reports it.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

pub fn run(args: &Args) -> Result<()> {
    println!("== pins: Pin objects to Pinned on a real control plane ({}) ==", measure::load_line());
    let kube = Kube::start()?;
    let namespace = format!("bench-pins-{}", std::process::id());
    let release = Release::install(&kube, &namespace, &["peers.podManagementPolicy=Parallel"])?;
    let pods: Vec<String> = (0..3).map(Release::pod).collect();
    release.wait_joined(&pods.iter().map(String::as_str).collect::<Vec<_>>(), 3, STEP_TIMEOUT)?;

    let total = args.latency_pins + args.bulk_pins;
    println!("   putting {total} blocks into each of the 3 daemons...");
    let started = Instant::now();
    let cids = put_everywhere(&release, &pods, total)?;
    println!("   put in {:.1} s", started.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let client = client_of(&kube).await?;
        let pins = Api::<Pin>::namespaced(client, &namespace);
        let seen = Seen::default();
        let watching = tokio::spawn(watch_pinned(pins.clone(), seen.clone()));

        let (latency_cids, bulk_cids) = cids.split_at(args.latency_pins);
        let latencies = latency(&pins, &seen, latency_cids).await?;
        let before = request_counts(&release)?;
        let mut memory = OperatorMemory::default();
        let cpu_before = measure::cpu_by_program();
        let bulk = bulk(&pins, &seen, bulk_cids, || memory.sample(&kube, &release)).await?;
        let cpu = measure::cpu_spent(&cpu_before, &measure::cpu_by_program(), 0.5);
        let after = request_counts(&release)?;
        watching.abort();
        report(&latencies, &bulk, &memory, &before, &after, &cpu);
        anyhow::Ok(())
    })
}

/// `count` distinct raw blocks put into every pod's daemon (a thread per daemon); their CIDs.
fn put_everywhere(release: &Release, pods: &[String], count: usize) -> Result<Vec<String>> {
    let blocks: Vec<Vec<u8>> = (0..count).map(|i| unique_bytes(&format!("bench pin {i}"))).collect();
    let daemons = pods.iter().map(|pod| PodIpfs::of(release, pod)).collect::<Result<Vec<_>>>()?;
    let puts: Vec<Result<Vec<String>>> = std::thread::scope(|scope| {
        let threads: Vec<_> = daemons
            .iter()
            .map(|daemon| scope.spawn(|| blocks.iter().map(|block| daemon.put(block)).collect::<Result<Vec<_>>>()))
            .collect();
        threads.into_iter().map(|t| t.join().expect("a put thread panicked")).collect()
    });
    let mut cids = Vec::new();
    for put in puts {
        cids = put?;
    }
    Ok(cids)
}

async fn client_of(kube: &Kube) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kube.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Records the first moment each Pin shows `Pinned`.
async fn watch_pinned(pins: Api<Pin>, seen: Seen) {
    let events = watcher(pins, watcher::Config::default()).default_backoff();
    let mut objects = std::pin::pin!(events.touched_objects());
    while let Some(object) = objects.next().await {
        let Ok(pin) = object else { continue };
        if pin.status.as_ref().is_some_and(|s| s.phase == PinPhase::Pinned) {
            let name = pin.metadata.name.clone().unwrap_or_default();
            seen.lock().unwrap().entry(name).or_insert_with(Instant::now);
        }
    }
}

fn pin_object(name: &str, cid: &str) -> Pin {
    Pin::new(name, PinSpec { cid: cid.to_string(), ..PinSpec::default() })
}

async fn wait_pinned(seen: &Seen, names: &[String], what: &str, mut tick: impl FnMut()) -> Result<Instant> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let last = {
            let seen = seen.lock().unwrap();
            names.iter().map(|n| seen.get(n).copied()).collect::<Option<Vec<Instant>>>().map(|t| t.into_iter().max())
        };
        if let Some(last) = last {
            return last.context("no Pin to wait for");
        }
        if Instant::now() > deadline {
            let pinned = names.iter().filter(|n| seen.lock().unwrap().contains_key(*n)).count();
            bail!("{what}: {pinned} of {} Pinned after {STEP_TIMEOUT:?}", names.len());
        }
        tick();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One Pin at a time: create -> Pinned, in seconds.
async fn latency(pins: &Api<Pin>, seen: &Seen, cids: &[String]) -> Result<Vec<f64>> {
    let mut latencies = Vec::new();
    for (i, cid) in cids.iter().enumerate() {
        let name = format!("single-{i}");
        let created = Instant::now();
        pins.create(&PostParams::default(), &pin_object(&name, cid)).await?;
        let pinned = wait_pinned(seen, std::slice::from_ref(&name), "a single Pin", || {}).await?;
        latencies.push((pinned - created).as_secs_f64());
    }
    Ok(latencies)
}

struct Bulk {
    pins: usize,
    created_s: f64,
    pinned_s: f64,
}

/// Every CID's Pin created at once, until all are Pinned.
async fn bulk(pins: &Api<Pin>, seen: &Seen, cids: &[String], tick: impl FnMut()) -> Result<Bulk> {
    let names: Vec<String> = (0..cids.len()).map(|i| format!("bulk-{i}")).collect();
    let started = Instant::now();
    futures::stream::iter(names.iter().zip(cids))
        .map(|(name, cid)| async move { pins.create(&PostParams::default(), &pin_object(name, cid)).await })
        .buffer_unordered(CREATES_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
    let created_s = started.elapsed().as_secs_f64();
    println!("   {} Pins created in {created_s:.1} s", names.len());
    let last = wait_pinned(seen, &names, "the bulk Pins", tick).await?;
    Ok(Bulk { pins: names.len(), created_s, pinned_s: (last - started).as_secs_f64() })
}

/// The API server's `apiserver_request_total` on Pins and events, by (resource, subresource, verb).
fn request_counts(release: &Release) -> Result<BTreeMap<(String, String, String), f64>> {
    let text = release.kubectl.run(&["get", "--raw", "/metrics"])?;
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            Some(labels[start..].split('"').next()?.to_string())
        };
        let (Some(resource), Some(subresource), Some(verb)) = (label("resource"), label("subresource"), label("verb"))
        else {
            continue;
        };
        if matches!(resource.as_str(), "pins" | "events") {
            *counts.entry((resource, subresource, verb)).or_default() += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(counts)
}

/// The operator replicas' peak memory (kubelet stand-in only: it knows their processes).
#[derive(Default)]
struct OperatorMemory {
    peak_mib: f64,
    last_sample: Option<Instant>,
}

impl OperatorMemory {
    fn sample(&mut self, kube: &Kube, release: &Release) {
        if self.last_sample.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.last_sample = Some(Instant::now());
        let Some(kubelet) = kube.kubelet() else { return };
        let selector = "app.kubernetes.io/component=operator";
        let path = "jsonpath={.items[*].metadata.name}";
        let names = release.kubectl.run(&["get", "pods", "-n", &release.namespace, "-l", selector, "-o", path]);
        for pod in names.unwrap_or_default().split_whitespace() {
            if let Ok(pid) = kubelet.pid(&release.namespace, pod, "operator") {
                let rss = measure::Rss::of_pid(pid);
                if rss.peak_mib.is_finite() {
                    self.peak_mib = self.peak_mib.max(rss.peak_mib);
                }
            }
        }
    }
}

fn report(
    latencies: &[f64],
    bulk: &Bulk,
    memory: &OperatorMemory,
    before: &BTreeMap<(String, String, String), f64>,
    after: &BTreeMap<(String, String, String), f64>,
    cpu: &[(String, f64)],
) {
    let mut micros: Vec<u32> = latencies.iter().map(|s| (s * 1e6) as u32).collect();
    let percentiles = measure::Percentiles::of(&mut micros);
    let (p50, p99, max) = (percentiles.p50 / 1e3, percentiles.p99 / 1e3, percentiles.max / 1e3);
    println!(
        "   one at a time ({}): created -> Pinned p50 {p50:.3} s, p99 {p99:.3} s, max {max:.3} s (targets p50 <= {LATENCY_TARGET_P50_S} s: {}, p99 <= {LATENCY_TARGET_P99_S} s: {})",
        latencies.len(),
        verdict(p50 <= LATENCY_TARGET_P50_S),
        verdict(p99 <= LATENCY_TARGET_P99_S),
    );
    println!(
        "   {} at once: created in {:.1} s, all Pinned {:.1} s after the first create (target <= {BULK_TARGET_S} s: {}); operator peak RSS {:.1} MiB (target <= {RSS_TARGET_MIB} MiB: {})",
        bulk.pins,
        bulk.created_s,
        bulk.pinned_s,
        verdict(bulk.pinned_s <= BULK_TARGET_S),
        memory.peak_mib,
        verdict(memory.peak_mib <= RSS_TARGET_MIB),
    );
    let mut per_pin = serde_json::Map::new();
    let mut operator_total = 0.0;
    for (key, count) in after {
        let mut delta = count - before.get(key).copied().unwrap_or(0.0);
        let (resource, subresource, verb) = key;
        if resource == "pins" && subresource.is_empty() && verb == "POST" {
            delta -= bulk.pins as f64; // the bench's own creates
        }
        if delta < 0.5 {
            continue;
        }
        let name = format!("{resource}{}{} {verb}", if subresource.is_empty() { "" } else { "/" }, subresource);
        operator_total += delta;
        per_pin.insert(name, serde_json::json!(round2(delta / bulk.pins as f64)));
    }
    println!(
        "   API server requests per Pin during the bulk phase (the bench's creates left out): {:.2} in all, {}",
        operator_total / bulk.pins as f64,
        serde_json::Value::Object(per_pin.clone())
    );
    let cpu_line: Vec<String> = cpu.iter().map(|(program, seconds)| format!("{program} {seconds} s")).collect();
    println!("   CPU during the bulk phase, by program: {}", cpu_line.join(", "));
    measure::emit(serde_json::json!({
        "scenario": "pins",
        "bulk_cpu_s": cpu.iter().map(|(program, seconds)| (program.clone(), serde_json::json!(seconds))).collect::<serde_json::Map<_, _>>(),
        "single": { "pins": latencies.len(), "p50_s": round2(p50), "p99_s": round2(p99), "max_s": round2(max) },
        "bulk": { "pins": bulk.pins, "created_s": round2(bulk.created_s), "all_pinned_s": round2(bulk.pinned_s) },
        "operator_peak_rss_mib": round2(memory.peak_mib),
        "api_requests_per_pin": per_pin,
        "load": measure::load(),
    }));
}
