//! Process and measurement helpers: memory and CPU from the kernel, machine load, percentiles,
//! and printing the one JSON line of figures.

use std::time::Duration;

/// Resident memory from `/proc/self/status`, in MiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    /// `VmRSS`: resident now.
    pub now_mib: f64,
    /// `VmHWM`: the peak so far.
    pub peak_mib: f64,
}

impl Rss {
    /// This process.
    pub fn read() -> Rss {
        Rss::from_status("/proc/self/status")
    }

    /// Another process (a peer child); NaN when it is gone.
    pub fn of_pid(pid: u32) -> Rss {
        Rss::from_status(&format!("/proc/{pid}/status"))
    }

    fn from_status(path: &str) -> Rss {
        let status = std::fs::read_to_string(path).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(f64::NAN, |kib| kib / 1024.0)
        };
        Rss { now_mib: field("VmRSS:"), peak_mib: field("VmHWM:") }
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VmRSS {:.1} MiB, VmHWM {:.1} MiB", self.now_mib, self.peak_mib)
    }
}

/// CPU time and context switches, from `getrusage`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User + system time.
    pub cpu: Duration,
    /// Voluntary + involuntary context switches.
    pub switches: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, earlier: Usage) -> Usage {
        Usage { cpu: self.cpu.saturating_sub(earlier.cpu), switches: self.switches.saturating_sub(earlier.switches) }
    }
}

fn rusage(who: libc::c_int) -> Usage {
    // SAFETY: getrusage only writes the struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage { cpu: tv(usage.ru_utime) + tv(usage.ru_stime), switches: (usage.ru_nvcsw + usage.ru_nivcsw) as u64 }
}

/// CPU time and context switches of the whole process, exited threads included.
pub fn process_usage() -> Usage {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time and context switches of the calling thread.
pub fn thread_usage() -> Usage {
    rusage(libc::RUSAGE_THREAD)
}

/// CPU time (user + system) of the whole process.
pub fn process_cpu() -> Duration {
    process_usage().cpu
}

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> Duration {
    thread_usage().cpu
}

/// CPU time (user + system) another process used so far, from `/proc/<pid>/stat` (clock ticks);
/// zero when it is gone.
pub fn pid_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

/// CPU time used so far by every live process, summed by program name (`/proc/*/stat`'s
/// command): which programs a window's time went to (a process that exited meanwhile is missed).
pub fn cpu_by_program() -> std::collections::BTreeMap<String, Duration> {
    let mut by_program = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some(name) = stat.split_once('(').and_then(|(_, rest)| rest.rsplit_once(')')).map(|(name, _)| name) else {
            continue;
        };
        *by_program.entry(name.to_string()).or_default() += pid_cpu(pid);
    }
    by_program
}

/// CPU seconds each program used between two [`cpu_by_program`] readings, the busiest first,
/// those under `min_s` left out. Kernel workers are left out too: a `kworker` renames itself after
/// its work item, so under a name new since `before` it would show its whole life's CPU.
pub fn cpu_spent(
    before: &std::collections::BTreeMap<String, Duration>,
    after: &std::collections::BTreeMap<String, Duration>,
    min_s: f64,
) -> Vec<(String, f64)> {
    let mut spent: Vec<(String, f64)> = after
        .iter()
        .filter(|(program, _)| !program.starts_with("kworker/"))
        .map(|(program, cpu)| (program.clone(), cpu.saturating_sub(before.get(program).copied().unwrap_or_default())))
        .map(|(program, cpu)| (program, round1(cpu.as_secs_f64())))
        .filter(|(_, seconds)| *seconds >= min_s)
        .collect();
    spent.sort_by(|a, b| b.1.total_cmp(&a.1));
    spent
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// CPU time all processes of the machine used since boot (`/proc/stat`: all but idle and iowait).
/// Minus this process's own time over an interval, it shows what other work took from the cores.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = ticks.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    Duration::from_secs_f64(busy as f64 / clock_ticks_per_second())
}

/// CPU over an interval: this process, some other processes (the peer children) and the rest of
/// the machine ("other processes": builds and tests running beside the bench).
pub struct CpuWindow {
    at: std::time::Instant,
    machine: Duration,
    process: Duration,
    pids: Vec<(u32, Duration)>,
}

/// Cores used over a [`CpuWindow`].
#[derive(Clone, Debug, Default)]
pub struct CpuCores {
    /// Each pid given to [`CpuWindow::end`], in order.
    pub pids: Vec<f64>,
    /// This process.
    pub own: f64,
    /// Everything else on the machine.
    pub others: f64,
}

impl CpuCores {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "peers": self.pids.iter().map(|c| round2(*c)).collect::<Vec<_>>(),
            "bench": round2(self.own), "others": round2(self.others),
        })
    }
}

impl std::fmt::Display for CpuCores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers: Vec<String> = self.pids.iter().map(|c| format!("{c:.2}")).collect();
        write!(f, "peers [{}] cores, bench {:.2}, other processes {:.2}", peers.join(", "), self.own, self.others)
    }
}

impl CpuWindow {
    pub fn start(pids: &[u32]) -> CpuWindow {
        CpuWindow {
            at: std::time::Instant::now(),
            machine: machine_busy(),
            process: process_cpu(),
            pids: pids.iter().map(|&pid| (pid, pid_cpu(pid))).collect(),
        }
    }

    /// Cores each of `pids` used since [`CpuWindow::start`] (a pid born since counts from zero; one
    /// that died since, from its last reading: only live pids are exact), this process, and others.
    pub fn end(&self, pids: &[u32]) -> CpuCores {
        let seconds = self.at.elapsed().as_secs_f64().max(1e-9);
        let used: Vec<Duration> = pids
            .iter()
            .map(|&pid| {
                let before = self.pids.iter().find(|(p, _)| *p == pid).map_or(Duration::ZERO, |(_, cpu)| *cpu);
                pid_cpu(pid).saturating_sub(before)
            })
            .collect();
        let own = process_cpu().saturating_sub(self.process);
        let machine = machine_busy().saturating_sub(self.machine);
        let others = machine.saturating_sub(own + used.iter().sum::<Duration>());
        CpuCores {
            pids: used.iter().map(|d| d.as_secs_f64() / seconds).collect(),
            own: own.as_secs_f64() / seconds,
            others: others.as_secs_f64() / seconds,
        }
    }
}

/// The 1, 5 and 15 minute load averages and the core count.
pub fn load() -> serde_json::Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let avg: Vec<f64> = text.split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    serde_json::json!({ "loadavg": avg, "cores": cores })
}

pub fn load_line() -> String {
    let load = load();
    format!("load average {} on {} cores", load["loadavg"], load["cores"])
}

/// Latency percentiles, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// `micros` is sorted in place.
    pub fn of(micros: &mut [u32]) -> Percentiles {
        if micros.is_empty() {
            return Percentiles::default();
        }
        micros.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
            micros[rank - 1] as f64 / 1000.0
        };
        Percentiles { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: *micros.last().unwrap() as f64 / 1000.0 }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "p50": round2(self.p50), "p90": round2(self.p90), "p99": round2(self.p99), "max": round2(self.max) })
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms", self.p50, self.p90, self.p99, self.max)
    }
}

/// The median of `values` (sorted in place); NaN when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A target and whether the figure meets it, for the summary.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

/// `base` with the fields of the object `extra` added (or replaced).
pub fn merge(mut base: serde_json::Map<String, serde_json::Value>, extra: serde_json::Value) -> serde_json::Value {
    if let serde_json::Value::Object(extra) = extra {
        base.extend(extra);
    }
    serde_json::Value::Object(base)
}

/// Prints the figures as one JSON line (after the human summary, so docs can quote it), with what
/// the machine was doing meanwhile (`machine.rs`: the disk's fsync latency, other processes' CPU).
pub fn emit(figures: serde_json::Value) {
    let figures = match figures {
        serde_json::Value::Object(map) => merge(map, crate::machine::figures()),
        other => other,
    };
    println!("{}", serde_json::to_string(&figures).expect("JSON values serialize"));
}
