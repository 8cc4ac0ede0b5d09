//! The Pins of `examples/` and the content they name: the playground puts that content into every
//! daemon, so that each example reaches Pinned there (its daemons are not on the IPFS network).

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{PodIpfs, Release};

/// What the examples pin, each one raw block (`pin.yaml`, `pin-replicated.yaml`,
/// `pin-allocations.yaml`, in that order).
pub const CONTENT: [&[u8]; 3] = [b"IPFS Cluster on Kubernetes: a plain Pin\n", b"hello world", b"hello world\n"];

/// The repository's `examples/` directory.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The CID each example file names: `(file name, cid)`, sorted by file name.
pub fn cids() -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir())? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let object: serde_yaml::Value = serde_yaml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let cid = object["spec"]["cid"].as_str().with_context(|| format!("{}: no spec.cid", path.display()))?;
        found.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), cid.to_string()));
    }
    found.sort();
    Ok(found)
}

/// Puts the examples' content into the daemon of each of `pods`.
pub fn put_content(release: &Release, pods: &[String]) -> Result<()> {
    for pod in pods {
        let daemon = PodIpfs::of(release, pod)?;
        for data in CONTENT {
            daemon.put(data)?;
        }
    }
    Ok(())
}
