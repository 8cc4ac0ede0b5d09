//! A pod's IPFS daemon, through its RPC API at the pod IP (port 5001, where the sidecar reaches
//! it): content put into it before a Pin names it, and its own `pin/ls`, to check what it holds.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use sidecar::types::CidKey;

use super::release::wait_for;
use super::Release;
use crate::common::{key, raw_cid};

pub struct PodIpfs {
    url: String,
}

impl PodIpfs {
    /// The daemon of `pod` of `release`, at the pod's IP now, once it answers (a pod is ready
    /// when its sidecar is: the daemon beside it may still be starting).
    pub fn of(release: &Release, pod: &str) -> Result<PodIpfs> {
        let ip =
            release.kubectl.run(&["get", "pod", pod, "-n", &release.namespace, "-o", "jsonpath={.status.podIP}"])?;
        if ip.trim().is_empty() {
            bail!("pod {pod} has no IP");
        }
        let daemon = PodIpfs { url: format!("http://{}:5001/api/v0", ip.trim()) };
        let answering = format!("the IPFS daemon of pod {pod} answering");
        wait_for(&answering, Duration::from_secs(120), || daemon.call("id", &[], None).map_err(|e| format!("{e:#}")))?;
        Ok(daemon)
    }

    /// Puts `data` as one raw block, unpinned; its CID (CIDv1, raw: the same in every daemon).
    pub fn put(&self, data: &[u8]) -> Result<String> {
        let part =
            reqwest::multipart::Part::bytes(data.to_vec()).file_name("block").mime_str("application/octet-stream")?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let text = self.call("block/put", &[("format", "raw"), ("mhtype", "sha2-256")], Some(form))?;
        let answer: Value = serde_json::from_str(&text).with_context(|| format!("block/put answered {text}"))?;
        let cid = raw_cid(data);
        match answer["Key"].as_str() {
            Some(put) if key(put) == key(&cid) => Ok(cid),
            _ => bail!("block/put answered {text}, expected {cid}"),
        }
    }

    /// What the daemon itself holds: its recursive and direct pins.
    pub fn pins(&self) -> Result<HashSet<CidKey>> {
        let mut pins = HashSet::new();
        for kind in ["recursive", "direct"] {
            let text = self.call("pin/ls", &[("type", kind)], None)?;
            let listing: Value = serde_json::from_str(&text).with_context(|| format!("pin/ls answered {text}"))?;
            let keys = listing["Keys"].as_object().with_context(|| format!("pin/ls answered {text}"))?;
            pins.extend(keys.keys().map(|cid| key(cid)));
        }
        Ok(pins)
    }

    /// Whether the daemon holds `cid` (however its text is written).
    pub fn holds(&self, cid: &str) -> Result<bool> {
        Ok(self.pins()?.contains(&key(cid)))
    }

    fn call(&self, command: &str, query: &[(&str, &str)], form: Option<reqwest::multipart::Form>) -> Result<String> {
        let url = format!("{}/{command}", self.url);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let mut request = reqwest::Client::new().post(&url).query(query).timeout(Duration::from_secs(30));
            if let Some(form) = form {
                request = request.multipart(form);
            }
            let response = request.send().await.with_context(|| format!("POST {url}"))?;
            let status = response.status();
            let text = response.text().await?;
            if !status.is_success() {
                bail!("POST {url}: {status}: {text}");
            }
            Ok(text)
        })
    }
}
