//! Probes (httpGet on the pod IP, tcpSocket, exec with the container's environment), the
//! kubelet's counting of consecutive results against a probe's thresholds, and a container's
//! [`Prober`].

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;

use super::paths::rewrite;
use super::pod::Records;
use super::runtime::Launch;

/// A probe's timing and thresholds, with Kubernetes' defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Schedule {
    pub fn of(probe: &Probe) -> Schedule {
        let seconds =
            |value: Option<i32>, default: u64| Duration::from_secs(value.map_or(default, |v| v.max(0) as u64));
        let count = |value: Option<i32>, default: u32| value.map_or(default, |v| v.max(1) as u32);
        Schedule {
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Consecutive results turned into a verdict, as the kubelet's prober does: the verdict changes
/// only after `success_threshold` successes or `failure_threshold` failures in a row.
#[derive(Debug)]
pub struct Verdict {
    passing: bool,
    streak: u32,
}

impl Verdict {
    pub fn new(passing: bool) -> Verdict {
        Verdict { passing, streak: 0 }
    }

    /// Records one result; returns the (possibly new) verdict.
    pub fn record(&mut self, success: bool, schedule: &Schedule) -> bool {
        if success == self.passing {
            self.streak = 0;
        } else {
            self.streak += 1;
            let needed = if success { schedule.success_threshold } else { schedule.failure_threshold };
            if self.streak >= needed {
                self.passing = success;
                self.streak = 0;
            }
        }
        self.passing
    }
}

/// A container's startup, readiness and liveness probes while its process runs.
pub struct Prober {
    pub container: Container,
    pub pod_ip: Ipv4Addr,
    pub exec_env: Launch,
    pub records: Arc<Records>,
    pub index: usize,
    pub liveness_failed: Arc<Notify>,
}

impl Prober {
    pub async fn run(self) {
        if let Some(probe) = &self.container.startup_probe {
            if !self.passes_eventually(probe).await {
                self.liveness_failed.notify_one();
                return;
            }
        }
        self.records.update(self.index, |r| r.started = true);
        tokio::join!(self.readiness(), self.liveness());
    }

    /// Startup: true at the first success, false after `failure_threshold` failures.
    async fn passes_eventually(&self, probe: &Probe) -> bool {
        let schedule = Schedule::of(probe);
        tokio::time::sleep(schedule.initial_delay).await;
        let mut failures = 0;
        loop {
            if run_once(probe, &self.container, self.pod_ip, &self.exec_env).await {
                return true;
            }
            failures += 1;
            if failures >= schedule.failure_threshold {
                return false;
            }
            tokio::time::sleep(schedule.period).await;
        }
    }

    async fn readiness(&self) {
        let Some(probe) = &self.container.readiness_probe else {
            return self.records.update(self.index, |r| r.ready = true);
        };
        let schedule = Schedule::of(probe);
        tokio::time::sleep(schedule.initial_delay).await;
        let mut verdict = Verdict::new(false);
        loop {
            let ready = verdict.record(self.probe(probe).await, &schedule);
            let changed = self.records.snapshot()[self.index].ready != ready;
            if changed {
                self.records.update(self.index, |r| r.ready = ready);
            }
            tokio::time::sleep(schedule.period).await;
        }
    }

    async fn liveness(&self) {
        let Some(probe) = &self.container.liveness_probe else { return };
        let schedule = Schedule::of(probe);
        tokio::time::sleep(schedule.initial_delay).await;
        let mut verdict = Verdict::new(true);
        loop {
            if !verdict.record(self.probe(probe).await, &schedule) {
                self.liveness_failed.notify_one();
                return;
            }
            tokio::time::sleep(schedule.period).await;
        }
    }

    async fn probe(&self, probe: &Probe) -> bool {
        run_once(probe, &self.container, self.pod_ip, &self.exec_env).await
    }
}

/// Runs a probe once; `exec` runs as a process with the container's environment and mount paths.
pub async fn run_once(probe: &Probe, container: &Container, pod_ip: Ipv4Addr, exec_env: &Launch) -> bool {
    let timeout = Schedule::of(probe).timeout;
    let attempt = async {
        if let Some(http) = &probe.http_get {
            let port = resolve_port(&http.port, container)?;
            let host = http.host.clone().unwrap_or_else(|| pod_ip.to_string());
            let scheme = http.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
            let path = http.path.as_deref().unwrap_or("/");
            let client = reqwest::Client::new();
            let mut request =
                client.get(format!("{scheme}://{host}:{port}{path}")).header("User-Agent", "kube-probe/1.36");
            for header in http.http_headers.iter().flatten() {
                request = request.header(&header.name, &header.value);
            }
            let status = request.send().await.ok()?.status().as_u16();
            Some((200..400).contains(&status))
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = resolve_port(&tcp.port, container)?;
            let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_string());
            Some(tokio::net::TcpStream::connect((host.as_str(), port)).await.is_ok())
        } else if let Some(exec) = &probe.exec {
            let command: Vec<String> = exec.command.iter().flatten().map(|a| rewrite(a, &exec_env.mounts)).collect();
            let (program, args) = command.split_first()?;
            let status = tokio::process::Command::new(exec_env.exec_program(program))
                .args(args)
                .env_clear()
                .env("PATH", exec_env.path())
                .envs(exec_env.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&exec_env.dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .ok()?;
            Some(status.success())
        } else {
            None
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// A port given by number or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_changes_only_after_enough_results_in_a_row() {
        let schedule =
            Schedule::of(&Probe { success_threshold: Some(2), failure_threshold: Some(3), ..Default::default() });
        // (result, verdict after it), starting from failing.
        let steps = [
            (true, false),
            (false, false),
            (true, false),
            (true, true),
            (false, true),
            (false, true),
            (true, true),
            (false, true),
            (false, true),
            (false, false),
            (false, false),
        ];
        let mut verdict = Verdict::new(false);
        for (i, (result, expected)) in steps.into_iter().enumerate() {
            assert_eq!(verdict.record(result, &schedule), expected, "step {i}");
        }
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let schedule = Schedule::of(&Probe::default());
        assert_eq!(
            schedule,
            Schedule {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
    }

    #[test]
    fn ports_resolve_by_number_or_name() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "api", "containerPort": 5001}]
        }))
        .unwrap();
        assert_eq!(resolve_port(&IntOrString::Int(80), &container), Some(80));
        assert_eq!(resolve_port(&IntOrString::String("api".into()), &container), Some(5001));
        assert_eq!(resolve_port(&IntOrString::String("none".into()), &container), None);
    }
}
