//! The repository's Helm chart and a real `helm` (v4) to lint, render and install it. The helm binary
//! comes from `scripts/install-k8s-tools`, run on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// `charts/ipfs-cluster` of this repository.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ipfs-cluster")
}

/// The helm that `scripts/install-k8s-tools` installed.
pub struct Helm {
    binary: PathBuf,
}

impl Helm {
    /// Installs helm when needed (once per test process).
    pub fn installed() -> Result<Helm> {
        let tools = crate::setup::install("install-k8s-tools")?;
        Ok(Helm { binary: Path::new(&tools).join("helm") })
    }

    /// Runs `helm ARGS` and returns its stdout; a failure carries its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.binary.display()))?;
        if !out.status.success() {
            bail!("helm {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
