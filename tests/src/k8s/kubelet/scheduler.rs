//! The scheduler's one job here: bind each pending pod without a node to ours through the
//! `binding` subresource, as kube-scheduler does (one node, so no choice to make).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;

use super::pod::pod_key;
use super::Context;

const ATTEMPTS: u32 = 5;
const RETRY: Duration = Duration::from_millis(500);

pub async fn run(ctx: &Context) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let unscheduled = watcher::Config::default().fields("spec.nodeName=");
    let mut events = watcher(pods, unscheduled).default_backoff().applied_objects().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(pod) if wants_us(&pod) => bind(ctx, &pod).await,
            Ok(_) => {}
            Err(e) => ctx.note(&format!("scheduler watch: {e}")),
        }
    }
}

fn wants_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && spec.is_some_and(|s| s.node_name.is_none())
        && spec.and_then(|s| s.scheduler_name.as_deref()).is_none_or(|name| name == "default-scheduler")
}

async fn bind(ctx: &Context, pod: &Pod) {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(ctx.node.clone()),
            ..Default::default()
        },
    };
    for attempt in 1..=ATTEMPTS {
        match api.create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding).await {
            Ok(_) => return,
            // Bound already (or gone): nothing left to do.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => return,
            Err(e) if attempt == ATTEMPTS => ctx.note(&format!("{}: binding failed: {e}", pod_key(pod))),
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}
