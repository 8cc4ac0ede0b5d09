//! The Node: registered with a Ready condition, loopback addresses and some capacity, its Ready
//! heartbeat and its Lease in `kube-node-lease` renewed, so the node lifecycle controller of
//! kube-controller-manager never taints it unreachable.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};

use super::{Context, HOST_IP};

/// The kubelet renews its Lease every 10 s for a 40 s lease.
const RENEW_EVERY: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
const LEASE_NAMESPACE: &str = "kube-node-lease";

pub async fn register(ctx: &Context) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(ctx.node.clone()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", ctx.node.as_str()),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", std::env::consts::ARCH),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("registering the Node"),
    }
    heartbeat(ctx).await
}

/// Renews the Ready condition and the Lease until the kubelet stops.
pub async fn keep_fresh(ctx: &Context) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = ctx.shutdown.cancelled() => return,
        }
        if let Err(e) = heartbeat(ctx).await {
            ctx.note(&format!("node heartbeat failed: {e:#}"));
        }
    }
}

async fn heartbeat(ctx: &Context) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let now = Time(Timestamp::now());
    let previous = nodes.get_status(&ctx.node).await.context("reading the Node")?;
    let since = |kind: &str, status: &str| {
        previous
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| c.type_ == kind && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone())
    };
    let condition = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since(kind, status)),
    };
    let capacity: std::collections::BTreeMap<String, Quantity> =
        [("cpu", "8"), ("memory", "32Gi"), ("pods", "110"), ("ephemeral-storage", "100Gi")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect();
    let status = NodeStatus {
        conditions: Some(vec![
            condition("Ready", "True", "KubeletReady", "kubelet stand-in is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ]),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: HOST_IP.into() },
            NodeAddress { type_: "Hostname".into(), address: ctx.node.clone() },
        ]),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            operating_system: "linux".into(),
            os_image: "kubelet stand-in".into(),
            kubelet_version: "v1.36.2".into(),
            container_runtime_version: "stand-in://processes".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let patch = serde_json::json!({ "status": status });
    let node = nodes
        .patch_status(&ctx.node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("updating the Node status")?;
    renew_lease(ctx, &node).await
}

async fn renew_lease(ctx: &Context, node: &Node) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), LEASE_NAMESPACE);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(ctx.node.clone()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: node
                .controller_owner_ref(&())
                .map(|owner| vec![OwnerReference { controller: None, ..owner }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(ctx.node.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    let params = PatchParams::apply("kubelet-stand-in").force();
    let lease = serde_json::json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": lease.metadata, "spec": lease.spec });
    leases.patch(&ctx.node, &params, &Patch::Apply(&lease)).await.context("renewing the node Lease")?;
    Ok(())
}
