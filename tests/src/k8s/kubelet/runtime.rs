//! The container runtime: an image map decides which local program stands for a container's image,
//! and each container runs as a process (in a process group of its own, as a container's processes
//! share a fate) with its log appended to a file.
//!
//! An image brings what its Dockerfile declares: the entrypoint (a container's `command` replaces
//! it, its `args` follow), `ENV` (a container's own `env` wins) and `VOLUME`s (a directory in the
//! container's scratch directory unless the container mounts something there).
//!
//! The IPFS image runs the js-ipfs launcher (`tests/ipfs-daemon/launcher.mjs`) on the pod IP: the
//! container port named `api` is the RPC API port and the one named `swarm` the swarm port (Kubo's
//! 5001 and 4001 when not declared), the repository is `IPFS_PATH` (as Kubo's image). The IPFS
//! container's own command and args are not used.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::Container;

use super::paths::Mount;
use crate::peer::workspace_binary;

/// What a container image stands for here.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub runs: Runs,
    /// The image's `ENV`.
    pub env: Vec<(String, String)>,
    /// The image's `VOLUME`s.
    pub volumes: Vec<String>,
}

/// The program behind an image.
#[derive(Clone, Debug, PartialEq)]
pub enum Runs {
    /// A js-ipfs daemon (Kubo's RPC API) on the pod IP.
    IpfsDaemon,
    /// Our image: workspace binaries (target/debug), the one `command[0]` names by its file name
    /// (`/usr/local/bin/cluster-ctl` is `cluster-ctl`), else the entrypoint.
    Workspace { entrypoint: String },
    /// Programs of this machine (PATH): the entrypoint unless the container has a command.
    Host { entrypoint: Vec<String> },
}

impl Image {
    /// Kubo's image: `ENV IPFS_PATH=/data/ipfs`, `VOLUME /data/ipfs`.
    pub fn ipfs_daemon() -> Image {
        Image {
            runs: Runs::IpfsDaemon,
            env: vec![("IPFS_PATH".into(), "/data/ipfs".into())],
            volumes: vec!["/data/ipfs".into()],
        }
    }

    /// Our peer image, as the repository's Dockerfile builds it (`--target sidecar`).
    pub fn sidecar() -> Image {
        Image {
            runs: Runs::Workspace { entrypoint: "cluster-sidecar".into() },
            env: vec![("CLUSTER_DATA_DIR".into(), "/data".into())],
            volumes: vec!["/data".into()],
        }
    }

    /// Our operator image (`--target operator`).
    pub fn operator() -> Image {
        Image { runs: Runs::Workspace { entrypoint: "cluster-operator".into() }, env: Vec::new(), volumes: Vec::new() }
    }

    /// Host programs, with no `ENV` or `VOLUME`.
    pub fn host(entrypoint: &[&str]) -> Image {
        let entrypoint = entrypoint.iter().map(|arg| arg.to_string()).collect();
        Image { runs: Runs::Host { entrypoint }, env: Vec::new(), volumes: Vec::new() }
    }

    /// The image's volumes that none of the container's mounts covers, in its scratch directory.
    pub fn unmounted_volumes(&self, mounts: &[Mount], scratch: &Path) -> Vec<Mount> {
        let covered = |path: &str| {
            mounts.iter().any(|m| {
                let mount = m.mount_path.trim_end_matches('/');
                path.strip_prefix(mount).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        };
        self.volumes
            .iter()
            .filter(|path| !covered(path))
            .map(|path| Mount { mount_path: path.clone(), host_dir: scratch.join(path.trim_start_matches('/')) })
            .collect()
    }
}

/// Image repository -> what runs.
#[derive(Clone, Debug)]
pub struct Images {
    by_repository: HashMap<String, Image>,
}

impl Default for Images {
    /// `ipfs/kubo` (the IPFS daemon), `ipfs-cluster-sidecar` and `ipfs-cluster-operator` (our images, as the chart names them), `bitnami/kubectl` (kubectl),
    /// `busybox` (a shell: its `command` names a host program, e.g. `sh`) and `python` (python3).
    fn default() -> Images {
        Images { by_repository: HashMap::new() }
            .with("ipfs/kubo", Image::ipfs_daemon())
            .with("ipfs-cluster-sidecar", Image::sidecar())
            .with("ipfs-cluster-operator", Image::operator())
            .with("bitnami/kubectl", Image::host(&["kubectl"]))
            .with("busybox", Image::host(&[]))
            .with("python", Image::host(&["python3"]))
    }
}

impl Images {
    pub fn with(mut self, repository: &str, image: Image) -> Images {
        self.by_repository.insert(repository.to_string(), image);
        self
    }

    /// The entry for the image's repository, whatever registry it comes from (an entry
    /// `ipfs-cluster-sidecar` serves `ghcr.io/someone/ipfs-cluster-sidecar:v1` too).
    pub fn lookup(&self, image: &str) -> Option<&Image> {
        let repository = repository(image);
        self.by_repository.get(repository).or_else(|| {
            let mut tails = repository.match_indices('/').map(|(at, _)| &repository[at + 1..]);
            tails.find_map(|tail| self.by_repository.get(tail))
        })
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
    /// The container's working directory.
    pub dir: PathBuf,
    /// The container's mounts, also rewritten in its exec probes and hooks.
    pub mounts: Vec<Mount>,
    /// Where the image's own programs are (ours: the workspace's binaries).
    pub bin_dir: Option<PathBuf>,
}

impl Launch {
    /// The PATH of the container and its exec hooks and probes: the image's programs first.
    pub fn path(&self) -> OsString {
        let host = std::env::var_os("PATH").unwrap_or_default();
        let dirs = self.bin_dir.iter().cloned().chain(std::env::split_paths(&host));
        std::env::join_paths(dirs).unwrap_or(host)
    }

    /// The program an exec hook or probe names: the image's own by its file name (as
    /// `/usr/local/bin/cluster-ctl` in our image), else a program of this machine.
    pub fn exec_program(&self, name: &str) -> PathBuf {
        let own = self.bin_dir.as_ref().zip(Path::new(name).file_name()).map(|(dir, file)| dir.join(file));
        own.filter(|path| path.is_file()).unwrap_or_else(|| name.into())
    }
}

/// What the container runs, given its command and args already expanded and rewritten.
pub struct ContainerPlan {
    pub container: Container,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub pod_ip: Ipv4Addr,
    pub working_dir: PathBuf,
}

/// The process for the container; its env (the image's first) and paths are final.
pub fn launch(image: &Image, plan: ContainerPlan) -> Result<Launch> {
    let ContainerPlan { container, command, args, mut env, mounts, pod_ip, working_dir } = plan;
    match &image.runs {
        Runs::IpfsDaemon => {
            crate::setup::install("install-ipfs-daemon")?;
            let Some(repo) = env.iter().find(|(k, _)| k == "IPFS_PATH").map(|(_, v)| PathBuf::from(v)) else {
                bail!("the IPFS image needs IPFS_PATH");
            };
            std::fs::create_dir_all(&repo).with_context(|| format!("creating {}", repo.display()))?;
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
            let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("ipfs-daemon/launcher.mjs");
            Ok(Launch {
                program: "node".into(),
                args: vec![launcher.display().to_string(), repo.display().to_string()],
                env,
                dir: working_dir,
                mounts,
                bin_dir: None,
            })
        }
        Runs::Workspace { entrypoint } => {
            let (name, rest) = match command.split_first() {
                Some((program, rest)) => (Path::new(program).file_name().context("an empty command")?, rest),
                None => (entrypoint.as_ref(), &[][..]),
            };
            let program = workspace_binary(&name.to_string_lossy())?;
            let bin_dir = program.parent().map(Path::to_path_buf);
            Ok(Launch { program, args: [rest, &args].concat(), env, dir: working_dir, mounts, bin_dir })
        }
        Runs::Host { entrypoint } => {
            let argv = [if command.is_empty() { entrypoint.as_slice() } else { &command }, &args].concat();
            let Some((program, rest)) = argv.split_first() else { bail!("no command to run") };
            Ok(Launch { program: program.into(), args: rest.to_vec(), env, dir: working_dir, mounts, bin_dir: None })
        }
    }
}

/// Starts the process, its stdout and stderr appended to `log`. It gets only the container's
/// environment (and a PATH, unless it sets one) and dies with the test process.
pub fn spawn(launch: &Launch, log: &Path) -> Result<tokio::process::Child> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut command = std::process::Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .env("PATH", launch.path())
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
            ("localhost:5000/ipfs-cluster-sidecar:dev", "localhost:5000/ipfs-cluster-sidecar"),
            ("localhost:5000/ipfs-cluster-sidecar", "localhost:5000/ipfs-cluster-sidecar"),
        ] {
            assert_eq!(repository(image), repo, "{image}");
        }
    }

    #[test]
    fn images_are_found_from_any_registry() {
        let images = Images::default();
        for (image, found) in [
            ("ipfs/kubo:v0.32.1", Some(Image::ipfs_daemon())),
            ("quay.io/ipfs/kubo", Some(Image::ipfs_daemon())),
            ("ghcr.io/someone/ipfs-cluster-sidecar:v1", Some(Image::sidecar())),
            ("localhost:5000/ipfs-cluster-sidecar", Some(Image::sidecar())),
            ("someone/kubo", None),
            ("nginx", None),
        ] {
            assert_eq!(images.lookup(image), found.as_ref(), "{image}");
        }
    }

    #[test]
    fn an_image_volume_is_scratch_unless_mounted() {
        let scratch = Path::new("/s");
        let mount = |path: &str| Mount { mount_path: path.into(), host_dir: "/pvc".into() };
        let image = Image::sidecar();
        assert_eq!(
            image.unmounted_volumes(&[], scratch),
            [Mount { mount_path: "/data".into(), host_dir: "/s/data".into() }]
        );
        assert_eq!(image.unmounted_volumes(&[mount("/data/")], scratch), []);
        assert_eq!(image.unmounted_volumes(&[mount("/")], scratch), []);
        assert_eq!(image.unmounted_volumes(&[mount("/dat")], scratch).len(), 1);
        assert_eq!(image.unmounted_volumes(&[mount("/data/sub")], scratch).len(), 1);
    }

    #[test]
    fn exec_hooks_find_the_images_own_programs_by_file_name() {
        let bin = tempfile::tempdir().unwrap();
        std::fs::write(bin.path().join("cluster-ctl"), "").unwrap();
        let launch = |bin_dir: Option<PathBuf>| Launch {
            program: "cluster-sidecar".into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: "/".into(),
            mounts: Vec::new(),
            bin_dir,
        };
        let ours = launch(Some(bin.path().to_path_buf()));
        assert_eq!(ours.exec_program("/usr/local/bin/cluster-ctl"), bin.path().join("cluster-ctl"));
        assert_eq!(ours.exec_program("cluster-ctl"), bin.path().join("cluster-ctl"));
        assert_eq!(ours.exec_program("sh"), PathBuf::from("sh"));
        assert_eq!(launch(None).exec_program("cluster-ctl"), PathBuf::from("cluster-ctl"));
        let path = ours.path();
        assert_eq!(std::env::split_paths(&path).next().as_deref(), Some(bin.path()));
    }
}
