//! Real IPFS daemons for tests: js-ipfs 0.66.1 (Kubo-compatible RPC API) run by
//! `tests/ipfs-daemon/launcher.mjs`, on 127.0.0.1 only. See docs in shared/design/ipfs-daemon.md.
//!
//! A daemon dies with the test process (`PR_SET_PDEATHSIG`), and is stopped on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::Deserialize;
use sidecar::types::{Cid, CidKey, PinMode};

/// Start-up is 2.5-5 s alone, but several daemons starting on 2 busy cores take much longer.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// SIGTERM stops js-ipfs in well under a second; past this it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the daemon's stderr is kept to explain a failure.
const STDERR_KEPT: usize = 16 * 1024;

fn daemon_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ipfs-daemon")
}

fn ensure_installed() -> anyhow::Result<()> {
    crate::setup::install("install-ipfs-daemon").map(drop)
}

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, and test threads end
/// while shared daemons must live on: children are forked from this one thread, which lives as
/// long as the process.
fn spawn_from_long_lived_thread(command: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ipfs-daemon-spawner".into())
            .spawn(move || {
                for (mut command, reply) in queue {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawning the daemon spawner thread");
        Mutex::new(jobs)
    });
    let (reply, answer) = mpsc::channel();
    lock(spawner).send((command, reply)).expect("the spawner thread lives as long as the process");
    answer.recv().expect("the spawner thread always replies")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The launcher's one line on stdout once the daemon is ready.
#[derive(Deserialize)]
struct ReadyLine {
    api: String,
    swarm: Vec<String>,
    id: String,
}

/// What a running daemon is reachable at.
#[derive(Clone, Debug)]
struct Addresses {
    api: Multiaddr,
    swarm: Vec<Multiaddr>,
    peer_id: PeerId,
    api_port: u16,
    swarm_port: u16,
}

struct Process {
    /// `None` after [`IpfsDaemon::kill9`], until [`IpfsDaemon::restart`].
    child: Option<Child>,
    addresses: Addresses,
    stderr: Arc<Mutex<String>>,
}

/// One js-ipfs daemon on its own repository.
pub struct IpfsDaemon {
    repo: PathBuf,
    process: Mutex<Process>,
}

impl IpfsDaemon {
    /// Starts a daemon on `repo_dir` (created and initialised if needed) with free ports, and
    /// returns once its API answers.
    pub fn start(repo_dir: &Path) -> anyhow::Result<IpfsDaemon> {
        ensure_installed()?;
        let process = launch(repo_dir, 0, 0)?;
        Ok(IpfsDaemon { repo: repo_dir.to_path_buf(), process: Mutex::new(process) })
    }

    /// Starts a daemon on `repo_dir` with the given API and swarm ports (0 = any free port), e.g.
    /// on a port a peer was told about before any daemon listened there.
    pub fn start_on_ports(repo_dir: &Path, api_port: u16, swarm_port: u16) -> anyhow::Result<IpfsDaemon> {
        ensure_installed()?;
        let process = launch(repo_dir, api_port, swarm_port)?;
        Ok(IpfsDaemon { repo: repo_dir.to_path_buf(), process: Mutex::new(process) })
    }

    /// One daemon per test process, in its own temporary directory, started on first use and
    /// stopped (its directory removed) when the process exits. For tests that can share a daemon.
    pub fn shared() -> anyhow::Result<&'static IpfsDaemon> {
        static SHARED: OnceLock<Result<(tempfile::TempDir, IpfsDaemon), String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok((dir, daemon))) = SHARED.get() {
                daemon.stop();
                let _ = std::fs::remove_dir_all(dir.path());
            }
        }
        let shared = SHARED.get_or_init(|| {
            let started = tempfile::Builder::new()
                .prefix("shared-ipfs-daemon-")
                .tempdir()
                .context("creating the shared daemon's directory")
                .and_then(|dir| Ok((IpfsDaemon::start(&dir.path().join("repo"))?, dir)));
            match started {
                Ok((daemon, dir)) => {
                    // SAFETY: registers a plain function; it runs once, at normal process exit.
                    unsafe { libc::atexit(stop_shared) };
                    Ok((dir, daemon))
                }
                Err(e) => Err(format!("{e:#}")),
            }
        });
        match shared {
            Ok((_, daemon)) => Ok(daemon),
            Err(e) => bail!("the shared IPFS daemon did not start: {e}"),
        }
    }

    pub fn repo_dir(&self) -> &Path {
        &self.repo
    }

    /// The RPC API address, e.g. `/ip4/127.0.0.1/tcp/45123` (the sidecar's `node_multiaddress`).
    pub fn api_multiaddr(&self) -> Multiaddr {
        lock(&self.process).addresses.api.clone()
    }

    /// The RPC API as a URL, e.g. `http://127.0.0.1:45123` (append `/api/v0/...`).
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", lock(&self.process).addresses.api_port)
    }

    /// Swarm addresses, each ending in `/p2p/<peer id>` (what another daemon's `swarm/connect` takes).
    pub fn swarm_addrs(&self) -> Vec<Multiaddr> {
        lock(&self.process).addresses.swarm.clone()
    }

    pub fn peer_id(&self) -> PeerId {
        lock(&self.process).addresses.peer_id
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.process).child.as_ref().map(Child::id)
    }

    /// Kills the daemon with SIGKILL (a crash), leaving its repository as it was.
    pub fn kill9(&self) -> anyhow::Result<()> {
        let mut process = lock(&self.process);
        if let Some(mut child) = process.child.take() {
            child.kill().context("sending SIGKILL to the IPFS daemon")?;
            child.wait().context("reaping the IPFS daemon")?;
        }
        Ok(())
    }

    /// Stops the daemon if it runs (SIGTERM) and starts it again on the same repository and ports.
    pub fn restart(&self) -> anyhow::Result<()> {
        let mut process = lock(&self.process);
        if let Some(child) = process.child.take() {
            terminate(child);
        }
        // A killed daemon leaves its lock behind, which js-ipfs honours for 20 s; nobody holds it now.
        let stale_lock = self.repo.join("repo.lock");
        if stale_lock.is_dir() { std::fs::remove_dir_all(&stale_lock) } else { std::fs::remove_file(&stale_lock) }
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .with_context(|| format!("removing {}", stale_lock.display()))?;
        let Addresses { api_port, swarm_port, .. } = process.addresses;
        *process = launch(&self.repo, api_port, swarm_port)?;
        Ok(())
    }

    /// Stops the daemon (SIGTERM, then SIGKILL if it lingers). Idempotent.
    pub fn stop(&self) {
        if let Some(child) = lock(&self.process).child.take() {
            terminate(child);
        }
    }

    /// What the daemon wrote on stderr lately (for diagnosing a test failure).
    pub fn stderr_tail(&self) -> String {
        lock(&lock(&self.process).stderr).clone()
    }

    /// Imports `data` as one file **without pinning it** (tests decide what gets pinned) and
    /// returns its CID as the daemon wrote it (CIDv0 by default).
    pub async fn add_bytes(&self, data: &[u8]) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Added {
            #[serde(rename = "Hash")]
            hash: Option<String>,
        }
        // js-ipfs rejects a part without a Content-Type ("No content-type in multipart part").
        let part =
            reqwest::multipart::Part::bytes(data.to_vec()).file_name("data").mime_str("application/octet-stream")?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let text = self.rpc("add", &[("pin", "false")], Some(form)).await?;
        text.lines()
            .rev()
            .find_map(|line| serde_json::from_str::<Added>(line).ok()?.hash)
            .ok_or_else(|| anyhow!("add answered no hash: {text}"))
    }

    /// The daemon's recursive and direct pins, read with the non-streaming `pin/ls` (independent
    /// of the connector under test).
    pub async fn pin_ls(&self) -> anyhow::Result<HashMap<CidKey, PinMode>> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(rename = "Keys")]
            keys: HashMap<String, serde_json::Value>,
        }
        let mut pins = HashMap::new();
        for mode in [PinMode::Recursive, PinMode::Direct] {
            let text = self.rpc("pin/ls", &[("type", mode.as_str())], None).await?;
            let listing: Listing = serde_json::from_str(&text).with_context(|| format!("pin/ls answered {text}"))?;
            for cid in listing.keys.keys() {
                let cid = Cid::try_from(cid.as_str()).with_context(|| format!("pin/ls listed {cid}"))?;
                pins.entry(CidKey::of(&cid)).or_insert(mode);
            }
        }
        Ok(pins)
    }

    /// Unpins `cid` on the daemon directly, as a user would behind the cluster's back.
    pub async fn pin_rm(&self, cid: &str) -> anyhow::Result<()> {
        self.rpc("pin/rm", &[("arg", cid)], None).await.map(drop)
    }

    async fn rpc(
        &self,
        command: &str,
        query: &[(&str, &str)],
        form: Option<reqwest::multipart::Form>,
    ) -> anyhow::Result<String> {
        let url = format!("{}/api/v0/{command}", self.api_url());
        // A client per call: tests run on runtimes of their own, and a pooled connection must not
        // outlive the runtime that opened it.
        let mut request = reqwest::Client::new().post(&url).query(query);
        if let Some(form) = form {
            request = request.multipart(form);
        }
        let response = request.send().await.with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            bail!("{command}: {status}: {text}");
        }
        Ok(text)
    }
}

impl Drop for IpfsDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fills the repository `repo` (created if needed; no daemon may run on it) with `count` small raw
/// blocks, each pinned recursively: block `i` holds `seed` then `i`, both big-endian u64 (see
/// `fill.mjs`). Offline and in-process: minutes for a million pins. Its progress goes to stderr.
pub fn fill(repo: &Path, seed: u64, count: u64) -> anyhow::Result<Duration> {
    ensure_installed()?;
    let started = Instant::now();
    let status = node("fill.mjs", repo, [seed.to_string(), count.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running fill.mjs (is Node.js installed?)")?;
    anyhow::ensure!(status.success(), "fill.mjs failed on {}: {status}", repo.display());
    Ok(started.elapsed())
}

/// `node <script> <repo> <args>` beside the installed `node_modules`, stdin closed.
fn node(script: &str, repo: &Path, args: [String; 2]) -> Command {
    let mut command = Command::new("node");
    command
        .arg(daemon_dir().join(script))
        .arg(repo)
        .args(args)
        .current_dir(daemon_dir())
        .env("NO_UPDATE_NOTIFIER", "1")
        .stdin(Stdio::null());
    command
}

/// Spawns the launcher and waits for its ready line; on failure the daemon's stderr explains why.
fn launch(repo: &Path, api_port: u16, swarm_port: u16) -> anyhow::Result<Process> {
    let mut command = node("launcher.mjs", repo, [api_port.to_string(), swarm_port.to_string()]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = spawn_from_long_lived_thread(command).context("spawning node (is Node.js installed?)")?;

    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_log = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = err_pipe.read(&mut buffer) {
            let mut log = lock(&stderr_log);
            log.push_str(&String::from_utf8_lossy(&buffer[..n]));
            if log.len() > STDERR_KEPT {
                let cut = log.len() - STDERR_KEPT;
                let cut = (cut..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
                log.drain(..cut);
            }
        }
    });

    // The ready line is the first stdout line that parses; the rest is drained so node never blocks.
    let (ready_tx, ready_rx) = mpsc::channel();
    let out_pipe = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out_pipe).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Ok(ready) = serde_json::from_str::<ReadyLine>(&line) {
                    sent = ready_tx.send(ready).is_ok();
                }
            }
        }
    });

    let started = Instant::now();
    let outcome = ready_rx
        .recv_timeout(READY_TIMEOUT)
        .map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => anyhow!("not ready after {READY_TIMEOUT:?}"),
            mpsc::RecvTimeoutError::Disconnected => anyhow!("exited before it was ready"),
        })
        .and_then(addresses_of);
    match outcome {
        Ok(addresses) => Ok(Process { child: Some(child), addresses, stderr }),
        Err(e) => {
            terminate(child);
            let log = lock(&stderr).clone();
            Err(e.context(format!(
                "IPFS daemon on {} (after {:?}); its stderr:\n{log}",
                repo.display(),
                started.elapsed()
            )))
        }
    }
}

fn addresses_of(ready: ReadyLine) -> anyhow::Result<Addresses> {
    let peer_id: PeerId = ready.id.parse().with_context(|| format!("peer id {}", ready.id))?;
    // js-ipfs writes `/ip4/127.0.0.1/tcp/N/http`; the RPC address users configure has no `/http`.
    let api: Multiaddr = ready
        .api
        .parse::<Multiaddr>()
        .with_context(|| format!("api address {}", ready.api))?
        .iter()
        .filter(|p| !matches!(p, Protocol::Http))
        .collect();
    let swarm = ready
        .swarm
        .iter()
        .map(|a| a.parse::<Multiaddr>().with_context(|| format!("swarm address {a}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let api_port = tcp_port(&api).ok_or_else(|| anyhow!("no TCP port in {api}"))?;
    let swarm_port = swarm.iter().find_map(tcp_port).ok_or_else(|| anyhow!("no TCP swarm address in {swarm:?}"))?;
    Ok(Addresses { api, swarm, peer_id, api_port, swarm_port })
}

fn tcp_port(addr: &Multiaddr) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    })
}

/// SIGTERM, then SIGKILL if the daemon has not exited within [`STOP_TIMEOUT`].
fn terminate(mut child: Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) of our own child, which is not reaped yet (so the pid is still ours).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
