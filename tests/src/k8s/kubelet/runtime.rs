//! The container runtime: an image map decides which local program stands for a container's image,
//! and each container runs as a process (in a process group of its own, as a container's processes
//! share a fate) with its log appended to a file.
//!
//! The IPFS image runs the js-ipfs launcher (`tests/ipfs-daemon/launcher.mjs`) on the pod IP: the
//! container port named `api` is the RPC API port and the one named `swarm` the swarm port (Kubo's
//! 5001 and 4001 when not declared); the repository is the host directory of the mount at `IPFS_PATH`
//! (Kubo's `/data/ipfs` when unset), or the container's scratch directory without one. The IPFS
//! container's own command and args are not used.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::Container;

use super::paths::Mount;
use crate::peer::workspace_binary;

/// Kubo's repository path in its image.
const KUBO_IPFS_PATH: &str = "/data/ipfs";

/// What a container image stands for here.
#[derive(Clone, Debug, PartialEq)]
pub enum Image {
    /// A js-ipfs daemon (Kubo's RPC API) on the pod IP.
    IpfsDaemon,
    /// Our image: the workspace binary named by the container's `command[0]` (from target/debug).
    WorkspaceBinary,
    /// Programs of this machine (PATH): the image's entrypoint unless the container has a command.
    Host { entrypoint: Vec<String> },
}

/// Image repository (no registry `docker.io/`, no tag or digest) -> what runs.
#[derive(Clone, Debug)]
pub struct Images {
    by_repository: HashMap<String, Image>,
}

impl Default for Images {
    /// `ipfs/kubo` (the IPFS daemon), `ipfs-cluster-k8s` (our image), `bitnami/kubectl` (kubectl) and
    /// `busybox` (a shell: its `command` or `args` name a host program, e.g. `sh`).
    fn default() -> Images {
        Images { by_repository: HashMap::new() }
            .with("ipfs/kubo", Image::IpfsDaemon)
            .with("ipfs-cluster-k8s", Image::WorkspaceBinary)
            .with("bitnami/kubectl", Image::Host { entrypoint: vec!["kubectl".into()] })
            .with("busybox", Image::Host { entrypoint: Vec::new() })
    }
}

impl Images {
    pub fn with(mut self, repository: &str, image: Image) -> Images {
        self.by_repository.insert(repository.to_string(), image);
        self
    }

    pub fn lookup(&self, image: &str) -> Option<&Image> {
        self.by_repository.get(repository(image))
    }
}

/// `docker.io/library/busybox:1.36@sha256:..` -> `busybox`.
pub fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    let image = match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => image,
    };
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    image.strip_prefix("library/").unwrap_or(image)
}

/// A process to start for a container.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    /// The container's mounts, also rewritten in its exec probes and hooks.
    pub mounts: Vec<Mount>,
}

/// What the container runs, given its command and args already expanded and rewritten.
pub struct ContainerPlan {
    pub container: Container,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub pod_ip: Ipv4Addr,
    /// Stands for the container's own filesystem: emptied at each start.
    pub scratch: PathBuf,
}

pub fn launch(image: &Image, plan: ContainerPlan) -> Result<Launch> {
    let ContainerPlan { container, command, args, mut env, mounts, pod_ip, scratch } = plan;
    match image {
        Image::IpfsDaemon => {
            crate::setup::install("install-ipfs-daemon")?;
            let ipfs_path = env.iter().find(|(k, _)| k == "IPFS_PATH").map_or(KUBO_IPFS_PATH, |(_, v)| v.as_str());
            let repo = mounts
                .iter()
                .find(|m| m.mount_path.trim_end_matches('/') == ipfs_path || m.host_dir == Path::new(ipfs_path))
                .map_or_else(|| scratch.join("ipfs"), |m| m.host_dir.clone());
            // Only this container uses the repo and its previous process is gone: a lock left by a
            // killed daemon would hold a restart for 20 s.
            let _ = std::fs::remove_dir_all(repo.join("repo.lock"));
            let _ = std::fs::remove_file(repo.join("repo.lock"));
            let port = |name: &str, default: i32| {
                container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name))
                    .map_or(default, |p| p.container_port)
            };
            env.push(("IPFS_HOST".into(), pod_ip.to_string()));
            env.push(("IPFS_API_PORT".into(), port("api", 5001).to_string()));
            env.push(("IPFS_SWARM_PORT".into(), port("swarm", 4001).to_string()));
            env.push(("NO_UPDATE_NOTIFIER".into(), "1".into()));
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ipfs-daemon");
            Ok(Launch {
                program: "node".into(),
                args: vec![dir.join("launcher.mjs").display().to_string(), repo.display().to_string()],
                env,
                dir,
                mounts,
            })
        }
        Image::WorkspaceBinary => {
            let Some((name, rest)) = command.split_first() else {
                bail!("our image needs a command naming the workspace binary to run");
            };
            Ok(Launch { program: workspace_binary(name)?, args: [rest, &args].concat(), env, dir: scratch, mounts })
        }
        Image::Host { entrypoint } => {
            let argv = [if command.is_empty() { entrypoint.as_slice() } else { &command }, &args].concat();
            let Some((program, rest)) = argv.split_first() else { bail!("no command to run") };
            Ok(Launch { program: program.into(), args: rest.to_vec(), env, dir: scratch, mounts })
        }
    }
}

/// Starts the process, its stdout and stderr appended to `log`. It gets only the container's
/// environment (plus PATH and a HOME in its scratch directory) and dies with the test process.
pub fn spawn(launch: &Launch, log: &Path) -> Result<tokio::process::Child> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut command = std::process::Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &launch.dir)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    crate::peer::die_with_parent(&mut command);
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    command.spawn().with_context(|| format!("starting {}", launch.program.display()))
}

/// Sends `signal` to the container's process group.
pub fn signal(child: &tokio::process::Child, signal: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) of the group our own unreaped child leads.
        unsafe { libc::kill(-(pid as libc::pid_t), signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_drop_registry_tag_and_digest() {
        for (image, repo) in [
            ("busybox", "busybox"),
            ("busybox:1.36", "busybox"),
            ("docker.io/library/busybox:1.36", "busybox"),
            ("ipfs/kubo:v0.32.1", "ipfs/kubo"),
            ("docker.io/ipfs/kubo@sha256:abcd", "ipfs/kubo"),
            ("localhost:5000/ipfs-cluster-k8s:dev", "localhost:5000/ipfs-cluster-k8s"),
            ("localhost:5000/ipfs-cluster-k8s", "localhost:5000/ipfs-cluster-k8s"),
        ] {
            assert_eq!(repository(image), repo, "{image}");
        }
    }
}
