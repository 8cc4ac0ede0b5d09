//! What the machine was doing in the same run, printed with every figure so that a figure can be
//! judged on a noisy shared machine: the data disk's fsync latency (the floor of every durable
//! write) and the CPU taken by processes the bench did not start (builds, tests, anything else).
//!
//! The window of "other processes" runs from the start of the bench, or from the previous JSON
//! line, to this one: for `all` and `cluster`, each scenario gets its own.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::measure::{self, round2, Percentiles};

/// fsyncs timed per measurement: about 0.1 s on a local SSD, a few seconds on a slow disk.
const FSYNCS: usize = 200;
const BLOCK: usize = 4096;

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();
static WINDOW: Mutex<Option<Window>> = Mutex::new(None);

struct Window {
    at: Instant,
    /// CPU used so far by each process outside the bench's tree, by pid.
    outsiders: HashMap<u32, Duration>,
}

/// Starts the first window; `data_dir` is where the scenarios' data goes (`--dir` or the temp dir).
pub fn start(data_dir: PathBuf) {
    let _ = DATA_DIR.set(data_dir);
    *WINDOW.lock().expect("window") = Some(Window { at: Instant::now(), outsiders: outsiders() });
}

/// The figures of the window that ends now (and the next one starts): printed as a summary line
/// and returned for the JSON line.
pub fn figures() -> serde_json::Value {
    let dir = DATA_DIR.get().cloned().unwrap_or_else(std::env::temp_dir);
    let fsync = match fsync_latency(&dir) {
        Ok(fsync) => fsync,
        Err(e) => {
            println!("   machine      could not time fsync in {}: {e}", dir.display());
            Percentiles::default()
        }
    };
    let now = outsiders();
    let previous = WINDOW.lock().expect("window").replace(Window { at: Instant::now(), outsiders: now.clone() });
    let (seconds, others) = match previous {
        Some(window) => {
            let used: Duration = now
                .iter()
                .map(|(pid, cpu)| cpu.saturating_sub(window.outsiders.get(pid).copied().unwrap_or_default()))
                .sum();
            (window.at.elapsed().as_secs_f64(), used.as_secs_f64() / window.at.elapsed().as_secs_f64().max(1e-9))
        }
        None => (0.0, 0.0),
    };
    println!(
        "   machine      data disk fsync (4 KiB, {FSYNCS} times, in {}): p50 {:.2} ms, p99 {:.2} ms; processes outside the bench took {others:.2} cores over the last {seconds:.0} s",
        dir.display(),
        fsync.p50,
        fsync.p99
    );
    serde_json::json!({ "machine": {
        "fsync_ms": fsync.json(), "outside_cpu_cores": round2(others), "outside_window_s": measure::round1(seconds),
    }})
}

/// Latency of `write 4 KiB + fdatasync` in a fresh file in `dir`, [`FSYNCS`] times: the cost of
/// one durable write on that disk now.
fn fsync_latency(dir: &Path) -> std::io::Result<Percentiles> {
    let mut file = tempfile::tempfile_in(dir)?;
    file.write_all(&[0u8; BLOCK * 16])?;
    file.sync_all()?;
    let mut micros = Vec::with_capacity(FSYNCS);
    for i in 0..FSYNCS {
        file.write_all_at(&[i as u8; BLOCK], ((i % 16) * BLOCK) as u64)?;
        let started = Instant::now();
        file.sync_data()?;
        micros.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    Ok(Percentiles::of(&mut micros))
}

/// CPU used so far by every live process that is neither the bench nor one of its descendants.
fn outsiders() -> HashMap<u32, Duration> {
    let me = std::process::id();
    let parents: HashMap<u32, u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let is_ours = |mut pid: u32| {
        while pid > 1 {
            if pid == me {
                return true;
            }
            pid = match parents.get(&pid) {
                Some(&parent) => parent,
                None => return false,
            };
        }
        false
    };
    parents.keys().filter(|&&pid| !is_ours(pid)).map(|&pid| (pid, measure::pid_cpu(pid))).collect()
}

/// The parent pid, from `/proc/<pid>/stat` (the field after the state, past the command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}
