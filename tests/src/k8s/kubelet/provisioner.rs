//! The storage provisioner: a hostPath PersistentVolume in the kubelet's directory for each pending
//! claim, pre-bound to it (`claimRef`) so that the PV controller of kube-controller-manager binds
//! them. When the claim is deleted the PV controller marks the volume Released: its directory is
//! wiped and the PV deleted (what a dynamic provisioner's Delete reclaim policy does).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

use super::Context;

const PROVISIONED_BY: &str = "kubelet-stand-in/provisioned";
/// When a claim requests no size.
const DEFAULT_SIZE: &str = "1Gi";

pub async fn provision_claims(ctx: &Context) {
    let claims: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let mut events = watcher(claims, watcher::Config::default()).default_backoff().applied_objects().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(claim) if is_pending(&claim) => {
                if let Err(e) = provision(ctx, &claim).await {
                    ctx.note(&format!("provisioning a volume: {e:#}"));
                }
            }
            Ok(_) => {}
            Err(e) => ctx.note(&format!("claim watch: {e}")),
        }
    }
}

pub async fn reclaim_volumes(ctx: &Context) {
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let ours = watcher::Config::default().labels(&format!("{PROVISIONED_BY}=true"));
    let mut events = watcher(volumes.clone(), ours).default_backoff().applied_objects().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(volume) if volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released") => {
                if let Err(e) = reclaim(ctx, &volumes, &volume).await {
                    ctx.note(&format!("reclaiming a volume: {e:#}"));
                }
            }
            Ok(_) => {}
            Err(e) => ctx.note(&format!("volume watch: {e}")),
        }
    }
}

fn is_pending(claim: &PersistentVolumeClaim) -> bool {
    claim.metadata.deletion_timestamp.is_none()
        && claim.spec.as_ref().is_some_and(|s| s.volume_name.is_none())
        && claim.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|p| p == "Pending")
}

async fn provision(ctx: &Context, claim: &PersistentVolumeClaim) -> Result<()> {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let dir = ctx.dir.join("volumes").join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref()?.get("storage").cloned())
        .unwrap_or_else(|| Quantity(DEFAULT_SIZE.into()));
    let volume = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(PROVISIONED_BY.to_string(), "true".to_string())])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), size)])),
            access_modes: spec.access_modes.clone(),
            storage_class_name: spec.storage_class_name.clone(),
            volume_mode: spec.volume_mode.clone(),
            // Retain: the PV controller has no deleter for hostPath; this provisioner reclaims.
            persistent_volume_reclaim_policy: Some("Retain".into()),
            host_path: Some(HostPathVolumeSource { path: dir.display().to_string(), type_: Some("Directory".into()) }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: Some(uid),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    match Api::<PersistentVolume>::all(ctx.client.clone()).create(&PostParams::default(), &volume).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating PV {name}")),
    }
}

async fn reclaim(ctx: &Context, volumes: &Api<PersistentVolume>, volume: &PersistentVolume) -> Result<()> {
    let name = volume.metadata.name.clone().unwrap_or_default();
    if let Some(host_path) = volume.spec.as_ref().and_then(|s| s.host_path.as_ref()) {
        match std::fs::remove_dir_all(&host_path.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("wiping {}", host_path.path));
            }
            _ => {}
        }
    }
    match volumes.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e).with_context(|| format!("deleting PV {name}")),
    }
    ctx.note(&format!("PV {name} released: wiped and deleted"));
    Ok(())
}
