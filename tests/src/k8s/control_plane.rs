//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager
//! (v1.36, see `scripts/install-k8s-tools`) as processes on free ports, with a CA, a serving
//! certificate, a service-account signing key and an admin token made at start. Several can run
//! side by side; each lives in its own temporary directory and stops when dropped.
//!
//! Only the kubelet is missing (and kube-proxy, DNS): pods stay Pending until a stand-in binds and
//! runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use super::Kubectl;
use crate::common::free_port;
use crate::peer::die_with_parent;

/// etcd and the API server start in a few seconds alone; on 2 busy cores it takes longer.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of a component's log is shown when it fails.
const LOG_TAIL: usize = 4096;

pub struct ControlPlane {
    dir: tempfile::TempDir,
    /// Admin credentials (`system:masters`) for the API server.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// Started in this order, stopped in the reverse one.
    components: Vec<Component>,
}

struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ControlPlane {
    /// Starts the three components and returns once the API server is ready and the controller
    /// manager acts (the `default` ServiceAccount exists). A port taken between being found free
    /// and being bound (by another control plane starting, or as a connection's source port)
    /// makes a component exit: then it starts over on other ports, three times at most.
    pub fn start() -> Result<ControlPlane> {
        let mut attempt = 1;
        loop {
            match ControlPlane::start_once() {
                Err(error) if attempt < 3 && format!("{error:#}").contains("address already in use") => {
                    eprintln!("control plane: a port was taken meanwhile, starting over: {error:#}");
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    fn start_once() -> Result<ControlPlane> {
        let tools = PathBuf::from(crate::setup::install("install-k8s-tools")?);
        let dir = tempfile::Builder::new().prefix("control-plane-").tempdir()?;
        let files = Files::write(dir.path())?;
        let api_port = free_port();
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.path().join("kubeconfig");
        fs::write(&kubeconfig, kubeconfig_yaml(&server, &files.ca_cert, &files.token))?;
        let mut plane = ControlPlane { dir, kubeconfig, server, components: Vec::new() };

        let (etcd_port, etcd_peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd_data = plane.dir.path().join("etcd");
        plane.spawn(
            "etcd",
            tools.join("etcd"),
            &[
                format!("--data-dir={}", etcd_data.display()),
                "--name=default".into(),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
            ],
        )?;

        let path = |p: &Path| p.display().to_string();
        plane.spawn(
            "kube-apiserver",
            tools.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", path(&files.serving_cert)),
                format!("--tls-private-key-file={}", path(&files.serving_key)),
                format!("--client-ca-file={}", path(&files.ca_cert)),
                format!("--token-auth-file={}", path(&files.tokens)),
                "--authorization-mode=Node,RBAC".into(),
                "--anonymous-auth=false".into(),
                format!("--service-account-key-file={}", path(&files.sa_public)),
                format!("--service-account-signing-key-file={}", path(&files.sa_private)),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
                format!("--cert-dir={}", path(&plane.dir.path().join("apiserver-certs"))),
            ],
        )?;
        let kubectl = plane.kubectl();
        plane.wait("the API server's /readyz", || Ok(kubectl.run(&["get", "--raw", "/readyz"])? == "ok"))?;

        let kubeconfig = path(&plane.kubeconfig);
        plane.spawn(
            "kube-controller-manager",
            tools.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()),
                format!("--service-account-private-key-file={}", path(&files.sa_private)),
                format!("--root-ca-file={}", path(&files.ca_cert)),
                "--use-service-account-credentials=false".into(),
                "--controllers=*".into(),
                "--leader-elect=false".into(),
                format!("--cert-dir={}", path(&plane.dir.path().join("controller-manager-certs"))),
            ],
        )?;
        plane.wait("the controller manager to create the default ServiceAccount", || {
            Ok(kubectl.run(&["get", "serviceaccount", "default", "-o", "name"]).is_ok_and(|o| !o.is_empty()))
        })?;
        Ok(plane)
    }

    /// kubectl with this control plane's admin kubeconfig.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, name: &'static str, binary: PathBuf, args: &[String]) -> Result<()> {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = fs::File::create(&log)?;
        let mut command = Command::new(&binary);
        command.args(args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        die_with_parent(&mut command);
        let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        self.components.push(Component { name, child, log });
        Ok(())
    }

    /// Polls `ready` until true; fails early, with the component's log, when a component exits.
    fn wait(&mut self, what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready().unwrap_or(false) {
                return Ok(());
            }
            for component in &mut self.components {
                if let Some(status) = component.child.try_wait()? {
                    bail!("{} exited ({status}) while waiting for {what}:\n{}", component.name, component.log_tail());
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> =
                    self.components.iter().map(|c| format!("{}:\n{}", c.name, c.log_tail())).collect();
                bail!("timed out after {READY_TIMEOUT:?} waiting for {what}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Component {
    fn log_tail(&self) -> String {
        let bytes = fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(LOG_TAIL)..]).into_owned()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for component in self.components.iter_mut().rev() {
            // SAFETY: kill(2) of our own child, not reaped yet (so the pid is still ours).
            unsafe { libc::kill(component.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(component.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = component.child.kill();
            let _ = component.child.wait();
        }
    }
}

/// The credentials a control plane starts with.
struct Files {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_private: PathBuf,
    sa_public: PathBuf,
    tokens: PathBuf,
    token: String,
}

impl Files {
    fn write(dir: &Path) -> Result<Files> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        ca.distinguished_name.push(DnType::CommonName, "test control plane CA");
        let ca = ca.self_signed(&ca_key)?;

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        let serving = serving.signed_by(&serving_key, &ca, &ca_key)?;

        let sa_key = KeyPair::generate()?;
        let token = format!("{:032x}", rand::random::<u128>());
        let files = Files {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_private: dir.join("sa.key"),
            sa_public: dir.join("sa.pub"),
            tokens: dir.join("tokens.csv"),
            token,
        };
        fs::write(&files.ca_cert, ca.pem())?;
        fs::write(&files.serving_cert, serving.pem())?;
        fs::write(&files.serving_key, serving_key.serialize_pem())?;
        fs::write(&files.sa_private, sa_key.serialize_pem())?;
        fs::write(&files.sa_public, sa_key.public_key_pem())?;
        fs::write(&files.tokens, format!("{},admin,admin,system:masters\n", files.token))?;
        Ok(files)
    }
}

fn kubeconfig_yaml(server: &str, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: test
    user: admin
    namespace: default
current-context: test
",
        ca = ca.display()
    )
}
