//! The pod status the kubelet reports, computed from what it knows of the pod's containers: phase,
//! conditions and container statuses, as the StatefulSet controller and kubectl read them.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// What a container is doing now.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    Waiting { reason: String, message: String },
    Running { started_at: Timestamp },
    Terminated(Termination),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Termination {
    pub exit_code: i32,
    pub reason: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

impl Termination {
    /// A run that ended now with `status` (killed by signal N: exit code 128 + N, as runtimes say).
    pub fn of(status: ExitStatus, started_at: Timestamp) -> Termination {
        let exit_code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
        Termination {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            started_at,
            finished_at: Timestamp::now(),
        }
    }
}

/// The kubelet's record of one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub phase: Phase,
    pub ready: bool,
    pub started: bool,
    pub restart_count: i32,
    pub last_termination: Option<Termination>,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.into(),
            image: image.into(),
            phase: Phase::Waiting { reason: "ContainerCreating".into(), message: String::new() },
            ready: false,
            started: false,
            restart_count: 0,
            last_termination: None,
        }
    }
}

/// Everything the pod status is made of.
pub struct PodView<'a> {
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub start_time: Timestamp,
    pub restart_policy: &'a str,
    /// The kubelet is stopping the pod (deleted, or the node going away).
    pub terminating: bool,
    pub containers: &'a [ContainerRecord],
    /// The condition types of the pod's `readinessGates`: Ready also waits for these.
    pub readiness_gates: &'a [String],
    /// The pod's conditions now, whose transition times are kept when unchanged and whose other
    /// writers' conditions (readiness gates, DisruptionTarget) are kept as they are.
    pub current: &'a [PodCondition],
    pub now: Timestamp,
}

/// The conditions the kubelet owns.
const KUBELET_CONDITIONS: [&str; 5] =
    ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"];

pub fn pod_status(view: &PodView<'_>) -> PodStatus {
    let containers = view.containers;
    let containers_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let others: Vec<PodCondition> =
        view.current.iter().filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str())).cloned().collect();
    let gates_ready =
        view.readiness_gates.iter().all(|gate| others.iter().any(|c| &c.type_ == gate && c.status == "True"));
    let condition = |kind: &str, status: bool, reason: &str| {
        let status = if status { "True" } else { "False" };
        let since = view
            .current
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(view.now));
        PodCondition {
            type_: kind.into(),
            status: status.into(),
            last_transition_time: Some(since),
            reason: (status == "False").then(|| reason.into()),
            ..Default::default()
        }
    };
    let ready_reason = if containers_ready { "ReadinessGatesNotReady" } else { "ContainersNotReady" };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", true, ""),
        condition("Initialized", true, ""),
        condition("Ready", containers_ready && gates_ready, ready_reason),
        condition("ContainersReady", containers_ready, "ContainersNotReady"),
        condition("PodScheduled", true, ""),
    ];
    conditions.extend(others);
    PodStatus {
        phase: Some(phase(containers, view.restart_policy, view.terminating).into()),
        conditions: Some(conditions),
        container_statuses: Some(containers.iter().map(container_status).collect()),
        pod_ip: Some(view.pod_ip.into()),
        pod_ips: Some(vec![PodIP { ip: view.pod_ip.into() }]),
        host_ip: Some(view.host_ip.into()),
        host_ips: Some(vec![HostIP { ip: view.host_ip.into() }]),
        start_time: Some(Time(view.start_time)),
        // qosClass is left as the API server set it at creation (it is immutable).
        ..Default::default()
    }
}

/// Kubernetes' pod phase: Pending until every container has run, then Running while any runs or
/// will be restarted, and Succeeded/Failed once all have terminated for good (which a terminating
/// pod's containers have, whatever its restartPolicy).
pub fn phase(containers: &[ContainerRecord], restart_policy: &str, terminating: bool) -> &'static str {
    let never_ran = |c: &&ContainerRecord| matches!(c.phase, Phase::Waiting { .. }) && c.last_termination.is_none();
    if containers.is_empty() || containers.iter().any(|c| never_ran(&c)) {
        return "Pending";
    }
    let terminated: Vec<i32> = containers
        .iter()
        .filter_map(|c| match &c.phase {
            Phase::Terminated(t) => Some(t.exit_code),
            _ => None,
        })
        .collect();
    if terminated.len() < containers.len() {
        return "Running";
    }
    let all_succeeded = terminated.iter().all(|&code| code == 0);
    match restart_policy {
        _ if terminating && all_succeeded => "Succeeded",
        _ if terminating => "Failed",
        "Never" if all_succeeded => "Succeeded",
        "Never" => "Failed",
        "OnFailure" if all_succeeded => "Succeeded",
        _ => "Running",
    }
}

fn container_status(record: &ContainerRecord) -> ContainerStatus {
    ContainerStatus {
        name: record.name.clone(),
        image: record.image.clone(),
        image_id: String::new(),
        ready: record.ready,
        started: Some(record.started),
        restart_count: record.restart_count,
        state: Some(state(&record.phase)),
        last_state: record.last_termination.as_ref().map(|t| state(&Phase::Terminated(t.clone()))),
        ..Default::default()
    }
}

fn state(phase: &Phase) -> ContainerState {
    match phase {
        Phase::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..Default::default()
        },
        Phase::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(Time(*started_at)) }),
            ..Default::default()
        },
        Phase::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: Some(t.reason.clone()),
                started_at: Some(Time(t.started_at)),
                finished_at: Some(Time(t.finished_at)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phase: Phase, restarted: bool) -> ContainerRecord {
        let mut record = ContainerRecord::new("c", "busybox");
        record.phase = phase;
        record.last_termination = restarted.then(|| terminated(1));
        record
    }

    fn terminated(exit_code: i32) -> Termination {
        Termination {
            exit_code,
            reason: "Error".into(),
            started_at: Timestamp::UNIX_EPOCH,
            finished_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn phases_follow_kubernetes_rules() {
        let waiting = Phase::Waiting { reason: "ErrImagePull".into(), message: String::new() };
        let backoff = Phase::Waiting { reason: "CrashLoopBackOff".into(), message: String::new() };
        let running = Phase::Running { started_at: Timestamp::UNIX_EPOCH };
        let exited = |code| record(Phase::Terminated(terminated(code)), false);
        // (containers, restartPolicy, terminating, phase)
        for (containers, policy, terminating, expected) in [
            (vec![], "Always", false, "Pending"),
            (vec![record(waiting.clone(), false)], "Always", false, "Pending"),
            (vec![record(running.clone(), false), record(waiting, false)], "Always", false, "Pending"),
            (vec![record(running.clone(), false)], "Always", false, "Running"),
            (vec![record(backoff, true)], "Always", false, "Running"),
            (vec![exited(0)], "Always", false, "Running"),
            (vec![exited(0)], "Never", false, "Succeeded"),
            (vec![exited(2)], "Never", false, "Failed"),
            (vec![exited(2)], "OnFailure", false, "Running"),
            (vec![exited(0), record(running.clone(), false)], "Never", false, "Running"),
            (vec![record(running.clone(), false)], "Always", true, "Running"),
            (vec![exited(0), exited(0)], "Always", true, "Succeeded"),
            (vec![exited(0), exited(143)], "Always", true, "Failed"),
        ] {
            assert_eq!(
                phase(&containers, policy, terminating),
                expected,
                "{containers:?} with {policy}, terminating: {terminating}"
            );
        }
    }

    #[test]
    fn ready_needs_every_container_and_gate_and_keeps_others_conditions() {
        let mut ready = record(Phase::Running { started_at: Timestamp::UNIX_EPOCH }, false);
        ready.ready = true;
        let not_ready = record(Phase::Running { started_at: Timestamp::UNIX_EPOCH }, false);
        let earlier: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let condition_of = |kind: &str, status: &str| PodCondition {
            type_: kind.into(),
            status: status.into(),
            last_transition_time: Some(Time(earlier)),
            ..Default::default()
        };
        let status_of = |containers: &[ContainerRecord], gate: &str| {
            pod_status(&PodView {
                pod_ip: "127.0.3.2",
                host_ip: "127.0.0.1",
                start_time: earlier,
                restart_policy: "Always",
                terminating: false,
                containers,
                readiness_gates: &["example.com/joined".to_string()],
                current: &[condition_of("PodScheduled", "True"), condition_of("example.com/joined", gate)],
                now,
            })
        };
        let condition = |status: &PodStatus, kind: &str| {
            let found = status.conditions.iter().flatten().find(|c| c.type_ == kind).unwrap();
            (found.status.clone(), found.reason.clone(), found.last_transition_time.clone().unwrap().0)
        };
        let both = status_of(&[ready.clone(), not_ready], "True");
        assert_eq!(condition(&both, "Ready"), ("False".into(), Some("ContainersNotReady".into()), now));
        assert_eq!(condition(&both, "PodScheduled"), ("True".into(), None, earlier));
        assert_eq!(condition(&both, "example.com/joined"), ("True".into(), None, earlier));

        let gated = status_of(&[ready.clone(), ready.clone()], "False");
        assert_eq!(condition(&gated, "ContainersReady").0, "True");
        assert_eq!(condition(&gated, "Ready"), ("False".into(), Some("ReadinessGatesNotReady".into()), now));
        assert_eq!(condition(&gated, "example.com/joined").0, "False");

        let all = status_of(&[ready.clone(), ready], "True");
        assert_eq!(condition(&all, "Ready").0, "True");
        assert_eq!(all.conditions.iter().flatten().count(), 6, "{all:?}");
        assert_eq!(all.pod_ip.as_deref(), Some("127.0.3.2"));
    }
}
