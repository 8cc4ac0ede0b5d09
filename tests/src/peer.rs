//! Real peer processes: the `cluster-sidecar` binary started as a pod would run it, each on its
//! own loopback address with the standard ports, killed with SIGKILL and restarted at will.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The REST API port every peer uses, as in a pod.
pub const API_PORT: u16 = 9094;
/// The cluster (libp2p) port every peer uses, as in a pod.
pub const CLUSTER_PORT: u16 = 9096;
/// The cluster secret of the test peers.
pub const TEST_SECRET: &str = "7e57c1a55ec7e7000000000000000000000000000000000000000000000000e2";

/// A loopback address no other test of this run uses: 127.<pid-derived>.<counter>.1.
pub fn unique_loopback() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    Ipv4Addr::new(127, (pid % 250 + 2) as u8, ((pid / 250 + n) % 250 + 1) as u8, 1 + (n / 250 % 250) as u8)
}

/// The directory of the workspace's build outputs (`target/debug`), found from this test binary
/// (`target/debug/deps/<test>`) or workspace binary (`target/debug/<binary>`).
fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the executable has no parent directory")?;
    let dir = if dir.ends_with("deps") { dir.parent().context("deps/ has no parent directory")? } else { dir };
    Ok(dir.to_path_buf())
}

/// Path of a workspace binary; the test command builds them before running the tests.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!("{} is missing: build it first (`cargo build --workspace --bins`, as scripts/test does)", path.display());
    }
    Ok(path)
}

/// How to start one peer.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    pub data_dir: PathBuf,
    pub host: Ipv4Addr,
    /// The IPFS daemon's API multiaddr.
    pub ipfs_api: String,
    /// `--secret`; `None` starts the peer without one (it must refuse to start).
    pub secret: Option<String>,
    /// Further `--flag value` arguments.
    pub args: Vec<String>,
}

pub struct PeerProcess {
    pub options: PeerOptions,
    child: Option<Child>,
    log: PathBuf,
}

impl PeerProcess {
    /// Starts the peer and waits until its REST API answers `GET /health`.
    pub async fn start(options: PeerOptions) -> Result<Self> {
        let mut peer = PeerProcess { log: options.data_dir.join("peer.log"), options, child: None };
        peer.spawn()?;
        peer.wait_healthy(Duration::from_secs(60)).await?;
        Ok(peer)
    }

    /// Starts the process without waiting for it to be healthy (for start-up failure tests).
    pub fn spawn_unchecked(options: PeerOptions) -> Result<Self> {
        let mut peer = PeerProcess { log: options.data_dir.join("peer.log"), options, child: None };
        peer.spawn()?;
        Ok(peer)
    }

    fn spawn(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.options.data_dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(workspace_binary("cluster-sidecar")?);
        command
            .arg("--data-dir")
            .arg(&self.options.data_dir)
            .arg("--api-listen")
            .arg(format!("/ip4/{}/tcp/{API_PORT}", self.options.host))
            .arg("--ipfs-api")
            .arg(&self.options.ipfs_api)
            .arg("--listen")
            .arg(self.cluster_multiaddr())
            .args(self.options.secret.iter().flat_map(|secret| ["--secret", secret]))
            .args(&self.options.args)
            .env_remove("CLUSTER_SECRET")
            .env("RUST_LOG", "info,sidecar=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut command);
        self.child = Some(command.spawn().context("spawning cluster-sidecar")?);
        Ok(())
    }

    pub fn api_url(&self) -> String {
        format!("http://{}:{API_PORT}", self.options.host)
    }

    pub fn api_multiaddr(&self) -> String {
        format!("/ip4/{}/tcp/{API_PORT}", self.options.host)
    }

    /// Where other cluster peers connect to this one (without the `/p2p/<id>` suffix).
    pub fn cluster_multiaddr(&self) -> String {
        format!("/ip4/{}/tcp/{CLUSTER_PORT}", self.options.host)
    }

    /// The peer's log so far (stdout and stderr), for assertions and failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crashed node or an evicted pod: no shutdown code runs.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT: a frozen peer answers nothing and its connections stall, as a
    /// peer cut off from the network; on waking it carries on with its stale view of the cluster.
    pub fn freeze(&mut self, frozen: bool) {
        if let Some(child) = self.child.as_ref() {
            let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: plain kill(2) of our own child, not reaped yet (so the pid is still ours).
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// SIGTERM, as Kubernetes stops a pod, then waits for the exit (SIGKILL after `timeout`).
    /// Returns the exit code; `None` when it was not running or had to be killed.
    pub async fn stop(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let Some(child) = self.child.as_mut() else { return Ok(None) };
        // SAFETY: plain kill(2) of our own child, not reaped yet (so the pid is still ours).
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                self.kill9()?;
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process again on the same data directory and address.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()?;
        self.wait_healthy(Duration::from_secs(60)).await
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("peer not running")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("peer still running after {timeout:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let url = format!("{}/health", self.api_url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().context("peer not running")?.try_wait()? {
                bail!("peer exited with {status} during start-up; log:\n{}", self.log());
            }
            if let Ok(response) = client.get(&url).send().await {
                if response.status().as_u16() == 204 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("peer not healthy after {timeout:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Makes the child receive SIGKILL when the thread that spawned it ends, so no peer outlives its
/// test (or benchmark).
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
