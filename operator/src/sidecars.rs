//! Reaching a cluster's sidecars: each pod's REST API at its pod IP (never through a Service:
//! the operator must talk to one pod in particular, terminating ones included), with the
//! cluster's credentials from the Secret the StatefulSet's annotation names.

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_client::client::Client;
use cluster_client::types::ConsensusStatus;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::{Error, Result};

/// On a cluster's StatefulSet: the Secret holding the REST API credentials (`user:password`
/// under the key `credentials`).
pub const CREDENTIALS_ANNOTATION: &str = "ipfscluster.io/api-credentials";
const CREDENTIALS_KEY: &str = "credentials";
/// The sidecar's REST API and cluster (libp2p) ports, as the chart sets them.
const API_PORT: u16 = 9094;
const CLUSTER_PORT: u16 = 9096;
/// How long `GET /consensus` may take: a sidecar slower than that counts as not answering.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Membership changes wait for commits, and a join for the newcomer to catch up.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The sidecars of one cluster's pods.
pub struct Sidecars {
    /// Pod name to pod IP, for the pods that have one.
    addresses: BTreeMap<String, String>,
    credentials: Option<(String, String)>,
}

impl Sidecars {
    pub async fn of(client: &kube::Client, statefulset: &StatefulSet, pods: &[Pod]) -> Result<Sidecars> {
        let addresses =
            pods.iter().filter_map(|pod| Some((pod.name_any(), pod.status.as_ref()?.pod_ip.clone()?))).collect();
        let credentials = match statefulset.annotations().get(CREDENTIALS_ANNOTATION) {
            Some(secret) => Some(read_credentials(client, &statefulset.namespace().unwrap_or_default(), secret).await?),
            None => None,
        };
        Ok(Sidecars { addresses, credentials })
    }

    /// A client of the pod's sidecar, for membership changes (long timeout).
    pub fn client(&self, pod: &str) -> Result<Client> {
        self.client_with(pod, CHANGE_TIMEOUT)
    }

    /// A client of the pod's sidecar whose requests give up after `timeout`.
    pub fn client_with(&self, pod: &str, timeout: Duration) -> Result<Client> {
        let address = self.address(pod)?;
        let client = Client::new(&format!("http://{address}:{API_PORT}"))
            .map_err(|source| Error::Sidecar { pod: pod.to_string(), source })?
            .with_timeout(timeout);
        Ok(match &self.credentials {
            Some((user, password)) => client.with_basic_auth(user, password),
            None => client,
        })
    }

    /// The pod's cluster (libp2p) address, as other peers dial it.
    pub fn cluster_address(&self, pod: &str) -> Result<String> {
        Ok(format!("/ip4/{}/tcp/{CLUSTER_PORT}", self.address(pod)?))
    }

    fn address(&self, pod: &str) -> Result<&str> {
        let address = self.addresses.get(pod).map(String::as_str);
        address.ok_or_else(|| Error::Misconfigured(format!("pod {pod} has no IP address yet")))
    }

    /// `GET /consensus` of every sidecar at once; those that do not answer are left out.
    pub async fn statuses(&self) -> BTreeMap<String, ConsensusStatus> {
        let asks = self.addresses.keys().map(|pod| async move {
            let client = self.client_with(pod, STATUS_TIMEOUT).ok()?;
            match client.consensus().await {
                Ok(status) => Some((pod.clone(), status)),
                Err(error) => {
                    tracing::debug!(%pod, %error, "sidecar did not answer");
                    None
                }
            }
        });
        join_all(asks).await.into_iter().flatten().collect()
    }
}

/// The StatefulSet's pods: those its selector matches.
pub async fn pods_of(client: &kube::Client, statefulset: &StatefulSet) -> Result<Vec<Pod>> {
    let labels =
        statefulset.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref()).filter(|l| !l.is_empty()).ok_or_else(
            || Error::Misconfigured(format!("StatefulSet {} has no matchLabels", statefulset.name_any())),
        )?;
    let selector = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let pods = Api::<Pod>::namespaced(client.clone(), &statefulset.namespace().unwrap_or_default());
    Ok(pods.list(&ListParams::default().labels(&selector)).await?.items)
}

async fn read_credentials(client: &kube::Client, namespace: &str, name: &str) -> Result<(String, String)> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace).get(name).await?;
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(CREDENTIALS_KEY))
        .ok_or_else(|| Error::Misconfigured(format!("Secret {name} has no key {CREDENTIALS_KEY:?}")))?;
    let text = String::from_utf8(value.0.clone())
        .map_err(|_| Error::Misconfigured(format!("Secret {name}: {CREDENTIALS_KEY} is not UTF-8")))?;
    let (user, password) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| Error::Misconfigured(format!("Secret {name}: {CREDENTIALS_KEY} is not user:password")))?;
    Ok((user.to_string(), password.to_string()))
}
