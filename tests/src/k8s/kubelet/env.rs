//! A container's environment as the kubelet builds it: the API server's address first, then
//! `envFrom`, then `env` (later entries win), each `value` expanded against the variables before it.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, ObjectFieldSelector, Pod, Secret};
use kube::Api;

use super::expansion::expand;
use super::Context;

/// The variables in the order they were defined (a redefinition keeps the first position).
#[derive(Debug, Default)]
pub struct Env {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Env {
    pub fn set(&mut self, name: &str, value: String) {
        match self.index.get(name) {
            Some(&at) => self.vars[at].1 = value,
            None => {
                self.index.insert(name.to_string(), self.vars.len());
                self.vars.push((name.to_string(), value));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&at| self.vars[at].1.as_str())
    }

    pub fn as_map(&self) -> HashMap<String, String> {
        self.vars.iter().cloned().collect()
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    pub fn map_values(&mut self, mut f: impl FnMut(&str) -> String) {
        for (_, value) in &mut self.vars {
            *value = f(value);
        }
    }
}

/// What the downward API can see of a pod besides its object.
pub struct PodAddresses<'a> {
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

pub async fn container_env(
    ctx: &Context,
    pod: &Pod,
    container: &Container,
    addresses: &PodAddresses<'_>,
) -> Result<Env> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = Env::default();
    // What a real kubelet injects, but pointing at the API server itself: nothing dials a Service IP.
    env.set("KUBERNETES_SERVICE_HOST", "127.0.0.1".into());
    env.set("KUBERNETES_SERVICE_PORT", ctx.api_port.to_string());
    env.set("KUBERNETES_SERVICE_PORT_HTTPS", ctx.api_port.to_string());
    env.set("HOSTNAME", pod.metadata.name.clone().unwrap_or_default());

    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        let data = if let Some(secret) = &source.secret_ref {
            secret_data(ctx, namespace, &secret.name, secret.optional.unwrap_or(false)).await?
        } else if let Some(map) = &source.config_map_ref {
            config_map_data(ctx, namespace, &map.name, map.optional.unwrap_or(false)).await?
        } else {
            BTreeMap::new()
        };
        for (key, value) in data {
            env.set(&format!("{prefix}{key}"), value);
        }
    }

    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(source)) => match value_from(ctx, pod, source, addresses).await? {
                Some(value) => value,
                None => continue,
            },
            (Some(value), None) => expand(value, &env.as_map()),
            (None, None) => String::new(),
        };
        env.set(&var.name, value);
    }
    Ok(env)
}

/// `None` for an optional key that is missing (the variable is then not set).
async fn value_from(
    ctx: &Context,
    pod: &Pod,
    source: &EnvVarSource,
    addresses: &PodAddresses<'_>,
) -> Result<Option<String>> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(field) = &source.field_ref {
        return field_value(pod, field, addresses).map(Some);
    }
    let (data, key, optional) = if let Some(selector) = &source.secret_key_ref {
        let optional = selector.optional.unwrap_or(false);
        (secret_data(ctx, namespace, &selector.name, optional).await?, &selector.key, optional)
    } else if let Some(selector) = &source.config_map_key_ref {
        let optional = selector.optional.unwrap_or(false);
        (config_map_data(ctx, namespace, &selector.name, optional).await?, &selector.key, optional)
    } else {
        bail!("unsupported valueFrom {source:?} (only fieldRef, secretKeyRef and configMapKeyRef)");
    };
    match data.get(key) {
        Some(value) => Ok(Some(value.clone())),
        None if optional => Ok(None),
        None => bail!("couldn't find key {key} in the referenced Secret or ConfigMap"),
    }
}

/// The downward API's `fieldRef`.
pub fn field_value(pod: &Pod, field: &ObjectFieldSelector, addresses: &PodAddresses<'_>) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = field.field_path.as_str();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(addresses.pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(addresses.host_ip.to_string()),
        _ => keyed("metadata.labels['", &meta.labels).or_else(|| keyed("metadata.annotations['", &meta.annotations)),
    };
    value.ok_or_else(|| anyhow!("unsupported fieldRef {path}"))
}

pub async fn secret_data(
    ctx: &Context,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, String>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await.with_context(|| format!("reading Secret {namespace}/{name}"))? {
        Some(secret) => Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect()),
        None if optional => Ok(BTreeMap::new()),
        None => bail!("secret \"{name}\" not found"),
    }
}

pub async fn config_map_data(
    ctx: &Context,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await.with_context(|| format!("reading ConfigMap {namespace}/{name}"))? {
        Some(map) => Ok(map.data.unwrap_or_default()),
        None if optional => Ok(BTreeMap::new()),
        None => bail!("configmap \"{name}\" not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downward_api_reads_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "ns", "uid": "u-1",
                         "labels": {"app": "web"}, "annotations": {"note": "hi"}},
            "spec": {"nodeName": "node", "serviceAccountName": "sa", "containers": []}
        }))
        .unwrap();
        let addresses = PodAddresses { pod_ip: "127.0.3.4", host_ip: "127.0.0.1" };
        for (path, value) in [
            ("metadata.name", Some("web-0")),
            ("metadata.namespace", Some("ns")),
            ("metadata.uid", Some("u-1")),
            ("metadata.labels['app']", Some("web")),
            ("metadata.labels['missing']", Some("")),
            ("metadata.annotations['note']", Some("hi")),
            ("spec.nodeName", Some("node")),
            ("spec.serviceAccountName", Some("sa")),
            ("status.podIP", Some("127.0.3.4")),
            ("status.hostIP", Some("127.0.0.1")),
            ("metadata.generation", None),
        ] {
            let field = ObjectFieldSelector { field_path: path.into(), ..Default::default() };
            assert_eq!(field_value(&pod, &field, &addresses).ok().as_deref(), value, "{path}");
        }
    }
}
