//! Kubernetes for the operator's end-to-end tests: a real control plane on loopback
//! ([`ControlPlane`]), or the cluster `E2E_KUBECONFIG` names (kind, k3d, a real one); the tests
//! act through the stock `kubectl`, as a person would.

mod control_plane;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub use control_plane::ControlPlane;

/// Where the tests run: a control plane of their own, or an existing cluster.
pub enum Kube {
    Local(ControlPlane),
    External(PathBuf),
}

impl Kube {
    /// `E2E_KUBECONFIG`'s cluster when set, else a fresh control plane.
    pub fn start() -> Result<Kube> {
        match std::env::var_os("E2E_KUBECONFIG") {
            Some(path) => Ok(Kube::External(PathBuf::from(path))),
            None => Ok(Kube::Local(ControlPlane::start()?)),
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        match self {
            Kube::Local(plane) => &plane.kubeconfig,
            Kube::External(path) => path,
        }
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(self.kubeconfig())
    }
}

/// The stock `kubectl` on PATH, with one kubeconfig.
#[derive(Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Kubectl {
        Kubectl { kubeconfig: kubeconfig.to_path_buf() }
    }

    /// Runs `kubectl ARGS` and returns its stdout (trimmed); a failure carries its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_with_input(args, None)
    }

    /// `kubectl apply -f -` of `manifest` (YAML or JSON).
    pub fn apply(&self, manifest: &str) -> Result<String> {
        self.run_with_input(&["apply", "-f", "-"], Some(manifest))
    }

    fn run_with_input(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl (is it on PATH?)")?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}
