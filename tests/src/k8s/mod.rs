//! Kubernetes for the operator's end-to-end tests: a real control plane on loopback
//! ([`ControlPlane`]) with the [`Kubelet`] stand-in running its pods, or the cluster
//! `E2E_KUBECONFIG` names (kind, k3d, a real one); the tests act through the stock `kubectl`, as
//! a person would.

mod control_plane;
pub mod examples;
pub mod kubelet;
pub mod pod_ipfs;
pub mod release;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub use control_plane::ControlPlane;
pub use kubelet::{Image, Images, Kubelet};
pub use pod_ipfs::PodIpfs;
pub use release::{Release, Writer, Written};

/// Where the tests run: a control plane of their own, or an existing cluster.
pub enum Kube {
    /// Fields drop in order: the kubelet's processes stop before the control plane.
    Local {
        kubelet: Kubelet,
        plane: ControlPlane,
    },
    External(PathBuf),
}

impl Kube {
    /// `E2E_KUBECONFIG`'s cluster when set, else a fresh control plane with a kubelet stand-in
    /// (the default image map).
    pub fn start() -> Result<Kube> {
        match std::env::var_os("E2E_KUBECONFIG") {
            Some(path) => Ok(Kube::External(PathBuf::from(path))),
            None => {
                let plane = ControlPlane::start()?;
                let kubelet = Kubelet::start(&plane, Images::default())?;
                Ok(Kube::Local { kubelet, plane })
            }
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        match self {
            Kube::Local { plane, .. } => &plane.kubeconfig,
            Kube::External(path) => path,
        }
    }

    /// The kubelet stand-in, on a control plane of the harness's own.
    pub fn kubelet(&self) -> Option<&Kubelet> {
        match self {
            Kube::Local { kubelet, .. } => Some(kubelet),
            Kube::External(_) => None,
        }
    }

    /// What a pod's container wrote: the stand-in's log files, else `kubectl logs` (current run).
    pub fn logs(&self, namespace: &str, pod: &str, container: &str) -> Result<String> {
        match self {
            Kube::Local { kubelet, .. } => Ok(kubelet.logs(namespace, pod, container)),
            Kube::External(_) => self.kubectl().run(&["logs", "-n", namespace, pod, "-c", container]),
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
