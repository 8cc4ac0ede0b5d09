//! A pod's volumes as host directories under the pod's own directory (persistent volumes are the
//! provisioner's directories): `emptyDir`, `secret`, `configMap`, `downwardAPI`, `projected` (the
//! ServiceAccount token volume the API server adds to every pod: the token comes from a
//! TokenRequest bound to the pod), `persistentVolumeClaim` and `hostPath`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::Api;

use super::env::{config_map_data, field_value, secret_data, PodAddresses};
use super::paths::Mount;
use super::Context;

/// Where a container sees its ServiceAccount credentials.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// A projected token's lifetime when the pod names none (the API server's default).
const TOKEN_SECONDS: i64 = 3607;

/// Volume name -> host directory.
pub type PodVolumes = HashMap<String, PathBuf>;

pub async fn prepare(ctx: &Context, pod: &Pod, pod_dir: &Path, addresses: &PodAddresses<'_>) -> Result<PodVolumes> {
    let mut dirs = HashMap::new();
    let volumes: Vec<Volume> = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    for volume in &volumes {
        let dir = volume_dir(ctx, pod, volume, &pod_dir.join("volumes").join(&volume.name), addresses)
            .await
            .with_context(|| format!("volume {}", volume.name))?;
        dirs.insert(volume.name.clone(), dir);
    }
    Ok(dirs)
}

async fn volume_dir(
    ctx: &Context,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
    addresses: &PodAddresses<'_>,
) -> Result<PathBuf> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(claim) = &volume.persistent_volume_claim {
        return claimed_dir(ctx, namespace, &claim.claim_name).await;
    }
    if let Some(host_path) = &volume.host_path {
        return Ok(PathBuf::from(&host_path.path));
    }
    std::fs::create_dir_all(dir)?;
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.as_deref().unwrap_or_default();
        let data = secret_data(ctx, namespace, name, secret.optional.unwrap_or(false)).await?;
        write_items(dir, &data, secret.items.as_deref())?;
    } else if let Some(map) = &volume.config_map {
        let data = config_map_data(ctx, namespace, &map.name, map.optional.unwrap_or(false)).await?;
        write_items(dir, &data, map.items.as_deref())?;
    } else if let Some(downward) = &volume.downward_api {
        for item in downward.items.iter().flatten() {
            if let Some(field) = &item.field_ref {
                write_file(dir, &item.path, &field_value(pod, field, addresses)?)?;
            }
        }
    } else if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                let audiences = token.audience.iter().cloned().collect();
                let seconds = token.expiration_seconds.unwrap_or(TOKEN_SECONDS);
                write_file(dir, &token.path, &request_token(ctx, pod, audiences, seconds).await?)?;
            }
            if let Some(map) = &source.config_map {
                let data = config_map_data(ctx, namespace, &map.name, map.optional.unwrap_or(false)).await?;
                write_items(dir, &data, map.items.as_deref())?;
            }
            if let Some(secret) = &source.secret {
                let data = secret_data(ctx, namespace, &secret.name, secret.optional.unwrap_or(false)).await?;
                write_items(dir, &data, secret.items.as_deref())?;
            }
            for item in source.downward_api.iter().flat_map(|d| &d.items).flatten() {
                if let Some(field) = &item.field_ref {
                    write_file(dir, &item.path, &field_value(pod, field, addresses)?)?;
                }
            }
        }
    } else if volume.empty_dir.is_none() {
        bail!("unsupported volume type (the stand-in knows emptyDir, secret, configMap, downwardAPI, projected, persistentVolumeClaim, hostPath)");
    }
    Ok(dir.to_path_buf())
}

/// The directory of the PV bound to the claim; fails while the claim is not bound yet.
async fn claimed_dir(ctx: &Context, namespace: &str, claim: &str) -> Result<PathBuf> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let pvc = claims.get(claim).await.with_context(|| format!("reading PVC {namespace}/{claim}"))?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let Some(volume) = pvc.spec.and_then(|s| s.volume_name).filter(|_| bound) else {
        bail!("PVC {namespace}/{claim} is not bound yet");
    };
    let pv = Api::<PersistentVolume>::all(ctx.client.clone()).get(&volume).await?;
    match pv.spec.and_then(|s| s.host_path) {
        Some(host_path) => Ok(PathBuf::from(host_path.path)),
        None => bail!("PV {volume} is not a hostPath volume"),
    }
}

/// A ServiceAccount token bound to the pod, as the kubelet requests it for the projected volume.
async fn request_token(ctx: &Context, pod: &Pod, audiences: Vec<String>, seconds: i64) -> Result<String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audiences),
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..Default::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let answer: TokenRequest = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{account}"))?;
    match answer.status.and_then(|s| s.token) {
        Some(token) => Ok(token),
        None => bail!("the TokenRequest for {namespace}/{account} came back without a token"),
    }
}

fn write_items(dir: &Path, data: &BTreeMap<String, String>, items: Option<&[KeyToPath]>) -> Result<()> {
    match items {
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => write_file(dir, &item.path, value)?,
                    None if item.key.is_empty() => {}
                    None => bail!("key {} not found", item.key),
                }
            }
        }
        None => {
            for (key, value) in data {
                write_file(dir, key, value)?;
            }
        }
    }
    Ok(())
}

fn write_file(dir: &Path, relative: &str, content: &str) -> Result<()> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
}

/// A container's mounts as host directories (`subPath` inside its volume).
pub fn container_mounts(container: &Container, volumes: &PodVolumes) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(dir) = volumes.get(&mount.name) else { bail!("volume mount {} names no volume", mount.name) };
        let host_dir = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let dir = dir.join(sub);
                std::fs::create_dir_all(&dir)?;
                dir
            }
            None => dir.clone(),
        };
        mounts.push(Mount { mount_path: mount.mount_path.clone(), host_dir });
    }
    Ok(mounts)
}

/// A kubeconfig for an in-cluster client (`KUBECONFIG`): the API server with the projected
/// ServiceAccount token and CA of the container's `SERVICE_ACCOUNT_MOUNT`, in the pod's namespace.
pub fn service_account_kubeconfig(api_port: u16, credentials: &Path, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: in-cluster
  cluster:
    server: https://127.0.0.1:{api_port}
    certificate-authority: {ca}
users:
- name: service-account
  user:
    tokenFile: {token}
contexts:
- name: in-cluster
  context:
    cluster: in-cluster
    user: service-account
    namespace: {namespace}
current-context: in-cluster
",
        ca = credentials.join("ca.crt").display(),
        token = credentials.join("token").display(),
    )
}
