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

/// The longest any one kubectl call may take (the tests' own `--timeout`s are at most 180 s).
const KUBECTL_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

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
        // kubectl sets no timeout of its own: a request the API server never answers would hold
        // the test (and CI) forever. Longer than any wait a test asks kubectl for.
        let (finished, watched) = std::sync::mpsc::channel::<()>();
        let pid = child.id() as libc::pid_t;
        let watchdog = std::thread::spawn(move || {
            let hung = watched.recv_timeout(KUBECTL_LIMIT).is_err();
            if hung {
                // SAFETY: kill has no memory preconditions. kubectl is still running (it has not
                // answered in the limit), so the pid is still its own.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            hung
        });
        let out = child.wait_with_output();
        let _ = finished.send(());
        let hung = watchdog.join().unwrap_or(false);
        let out = out?;
        if hung {
            bail!(
                "kubectl {} did not finish within {KUBECTL_LIMIT:?}: killed; it said: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
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
