//! The daemon's configuration: defaults, then `service.json` (the reference's file, so existing
//! configurations migrate), then environment variables and flags (what Kubernetes manifests use).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use multiaddr::Multiaddr;
use serde::Deserialize;

use crate::api::RestApiConfig;
use crate::cluster::ClusterConfig;
use crate::ipfs::kubo::KuboConfig;
use crate::p2p::{parse_secret, P2pConfig};
use crate::tracker::TrackerConfig;
use crate::types::{go_duration, parse_std_duration};
use crate::{Error, Result};

pub const SERVICE_FILE: &str = "service.json";

/// `cluster-sidecar`: an IPFS Cluster peer beside an IPFS daemon.
///
/// Every flag can also be given as the environment variable shown; flags and variables override
/// `service.json`, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(name = "cluster-sidecar", version, about)]
pub struct DaemonArgs {
    /// Where the peer keeps its identity, pinset and configuration.
    #[arg(long, env = "CLUSTER_DATA_DIR", default_value = "~/.ipfs-cluster")]
    pub data_dir: String,
    /// The reference's `service.json` to read [default: <data-dir>/service.json when present].
    #[arg(long, env = "CLUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Human name of this peer [default: the host name].
    #[arg(long, env = "CLUSTER_PEERNAME")]
    pub peername: Option<String>,
    /// The cluster secret: 32 bytes as 64 hex digits, the same on every peer (required; e.g.
    /// `openssl rand -hex 32`).
    #[arg(long, env = "CLUSTER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Development only: run without a secret, on a publicly known all-zero key, so that a
    /// throwaway peer starts without one. Anyone can then join the peer's cluster.
    #[arg(long)]
    pub insecure_no_secret: bool,
    /// Where other cluster peers connect to this one [default: /ip4/0.0.0.0/tcp/9096].
    #[arg(long, env = "CLUSTER_LISTENMULTIADDRESS")]
    pub listen: Option<Multiaddr>,
    /// Listen address of the REST API.
    #[arg(long, env = "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS")]
    pub api_listen: Option<Multiaddr>,
    /// REST API users, `user:password[,user:password...]`; none = no authentication.
    #[arg(long, env = "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", hide_env_values = true)]
    pub basic_auth: Option<String>,
    /// The IPFS daemon's RPC API address.
    #[arg(long, env = "CLUSTER_IPFSHTTP_NODEMULTIADDRESS")]
    pub ipfs_api: Option<Multiaddr>,
    /// Fail a pin whose progress stalls this long (e.g. `2m`).
    #[arg(long, env = "CLUSTER_IPFSHTTP_PINTIMEOUT", value_parser = duration)]
    pub pin_timeout: Option<Duration>,
    /// Fail a pin that takes longer than this in all (e.g. `1h`).
    #[arg(long, env = "CLUSTER_IPFSHTTP_PINDEADLINE", value_parser = duration)]
    pub pin_deadline: Option<Duration>,
    /// Default replication factor minimum (-1 = every peer).
    #[arg(long, env = "CLUSTER_REPLICATIONFACTORMIN", allow_negative_numbers = true)]
    pub replication_min: Option<i32>,
    /// Default replication factor maximum (-1 = every peer).
    #[arg(long, env = "CLUSTER_REPLICATIONFACTORMAX", allow_negative_numbers = true)]
    pub replication_max: Option<i32>,
    /// IPFS pin operations running at once.
    #[arg(long, env = "CLUSTER_STATELESS_CONCURRENTPINS")]
    pub concurrent_pins: Option<usize>,
    /// How often failed pins are retried (`recover`).
    #[arg(long, env = "CLUSTER_PINRECOVERINTERVAL", value_parser = duration)]
    pub pin_recover_interval: Option<Duration>,
    /// How often the daemon's pin set is compared with the cluster's.
    #[arg(long, env = "CLUSTER_IPFSSYNCINTERVAL", value_parser = duration)]
    pub ipfs_sync_interval: Option<Duration>,
    /// How often the peer probes its daemon and publishes metrics.
    #[arg(long, env = "CLUSTER_MONITORPINGINTERVAL", value_parser = duration)]
    pub monitor_ping_interval: Option<Duration>,
    /// How often expired pins are unpinned.
    #[arg(long, env = "CLUSTER_EXPIRYCHECKINTERVAL", value_parser = duration)]
    pub expiry_check_interval: Option<Duration>,
    /// Cluster address of a member to join through, `/ip4/.../tcp/9096/p2p/<id>` (repeat or
    /// separate with commas). Ignored once this peer has consensus state.
    #[arg(long, env = "CLUSTER_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,
    /// Never start a new cluster: without consensus state, wait to be added by a member (`POST
    /// /peers` there) or for `POST /consensus/init`. What the Kubernetes operator runs peers with.
    #[arg(long, env = "CLUSTER_NO_INIT")]
    pub no_init: bool,
    /// Remove this peer from the cluster on a clean shutdown.
    #[arg(long, env = "CLUSTER_LEAVEONSHUTDOWN")]
    pub leave_on_shutdown: bool,
    /// Re-allocate the pins of a peer gone this long (e.g. `5m`); `off` only alerts.
    #[arg(long, env = "CLUSTER_REPIN_AFTER", value_parser = optional_duration)]
    pub repin_after: Option<OptionalDuration>,
    /// At most this many voting members (odd); further peers replicate as learners.
    #[arg(long, env = "CLUSTER_RAFT_MAXVOTERS")]
    pub max_voters: Option<usize>,
    /// Raft log entries between snapshots (each entry is a batch of up to 1024 pin operations).
    #[arg(long, env = "CLUSTER_RAFT_SNAPSHOTEVERY")]
    pub snapshot_every: Option<u64>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "CLUSTER_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(text: &str) -> std::result::Result<Duration, String> {
    parse_std_duration(text).ok_or_else(|| format!("not a duration: {text} (try 30s, 2m, 1h30m)"))
}

/// A duration, or `off` (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalDuration(pub Option<Duration>);

fn optional_duration(text: &str) -> std::result::Result<OptionalDuration, String> {
    match text {
        "off" | "none" | "0" => Ok(OptionalDuration(None)),
        text => duration(text).map(|d| OptionalDuration(Some(d))),
    }
}

/// Everything the daemon runs with, resolved.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub cluster: ClusterConfig,
    pub api: RestApiConfig,
    pub ipfs: KuboConfig,
    /// No secret was given and `--insecure-no-secret` allowed it: the all-zero key is in use.
    pub insecure_no_secret: bool,
}

impl DaemonConfig {
    pub fn resolve(args: DaemonArgs) -> Result<Self> {
        let data_dir = expand_home(&args.data_dir);
        let file = match &args.config {
            Some(path) => Some(ServiceFile::read(path)?),
            None => {
                let path = data_dir.join(SERVICE_FILE);
                path.exists().then(|| ServiceFile::read(&path)).transpose()?
            }
        }
        .unwrap_or_default();

        let section = file.cluster;
        let peername = args.peername.or(section.peername).unwrap_or_else(default_peername);
        let secret = args.secret.or(section.secret).filter(|s| !s.is_empty());
        let insecure_no_secret = secret.is_none() && args.insecure_no_secret;
        let secret = match secret {
            Some(secret) => parse_secret(&secret)?,
            None if insecure_no_secret => [0; 32],
            None => return Err(Error::Config(MISSING_SECRET.into())),
        };
        let mut p2p = P2pConfig::new(secret);
        set(&mut p2p.listen, section.listen_multiaddress);
        set(&mut p2p.listen, args.listen);
        let mut cluster = ClusterConfig::new(peername, p2p);
        let consensus = &mut cluster.consensus;
        consensus.bootstrap = args.bootstrap;
        consensus.auto_init = !args.no_init;
        consensus.leave_on_shutdown = args.leave_on_shutdown || section.leave_on_shutdown.unwrap_or(false);
        set(&mut consensus.max_voters, args.max_voters);
        set(&mut consensus.snapshot_every, args.snapshot_every.filter(|n| *n > 0));
        if consensus.max_voters.is_multiple_of(2) {
            return Err(Error::Config(format!("max voters must be odd, not {}", consensus.max_voters)));
        }
        if section.disable_repinning == Some(true) {
            cluster.repin_after = None;
        }
        set(&mut cluster.repin_after, args.repin_after.map(|r| r.0));
        cluster.tracker = file.pin_tracker.into_config()?;
        set(&mut cluster.replication_factor_min, section.replication_factor_min);
        set(&mut cluster.replication_factor_max, section.replication_factor_max);
        set(&mut cluster.replication_factor_min, args.replication_min);
        set(&mut cluster.replication_factor_max, args.replication_max);
        set(&mut cluster.monitor_ping_interval, section.monitor_ping_interval);
        set(&mut cluster.monitor_ping_interval, args.monitor_ping_interval);
        set(&mut cluster.expiry_check_interval, args.expiry_check_interval);
        set(&mut cluster.tracker.pin_recover_interval, section.pin_recover_interval);
        set(&mut cluster.tracker.pin_recover_interval, args.pin_recover_interval);
        set(&mut cluster.tracker.ipfs_sync_interval, args.ipfs_sync_interval);
        set(&mut cluster.tracker.concurrent_pins, args.concurrent_pins);
        cluster.tracker.validate()?;

        let mut api = file.api.restapi.unwrap_or_default();
        set(&mut api.http_listen_multiaddress, args.api_listen);
        if let Some(users) = args.basic_auth {
            api.basic_auth_credentials = Some(parse_credentials(&users)?);
        }

        let mut ipfs = file.ipfs_connector.ipfshttp.unwrap_or_default();
        set(&mut ipfs.node_multiaddress, args.ipfs_api);
        set(&mut ipfs.pin_timeout, args.pin_timeout);
        set(&mut ipfs.pin_deadline, args.pin_deadline);

        Ok(DaemonConfig { data_dir, cluster, api, ipfs, insecure_no_secret })
    }
}

const MISSING_SECRET: &str = "a cluster secret is required: give --secret or CLUSTER_SECRET (or `secret` in \
    service.json's `cluster` section), 64 hex digits shared by every peer (`openssl rand -hex 32` makes one); \
    --insecure-no-secret runs a development peer without one";

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The parts of the reference's `service.json` this peer understands; other keys are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ServiceFile {
    cluster: ClusterSection,
    api: ApiSection,
    ipfs_connector: IpfsSection,
    pin_tracker: TrackerSection,
}

impl ServiceFile {
    fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ClusterSection {
    peername: Option<String>,
    secret: Option<String>,
    listen_multiaddress: Option<Multiaddr>,
    replication_factor_min: Option<i32>,
    replication_factor_max: Option<i32>,
    #[serde(with = "optional_go_duration")]
    monitor_ping_interval: Option<Duration>,
    #[serde(with = "optional_go_duration")]
    pin_recover_interval: Option<Duration>,
    leave_on_shutdown: Option<bool>,
    disable_repinning: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ApiSection {
    restapi: Option<RestApiConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IpfsSection {
    ipfshttp: Option<KuboConfig>,
}

/// The reference nests the tracker's settings under `pin_tracker.stateless`; a flat
/// `pin_tracker` section is accepted too.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
struct TrackerSection(Option<serde_json::Value>);

impl TrackerSection {
    fn into_config(self) -> Result<TrackerConfig> {
        let Some(mut value) = self.0 else { return Ok(TrackerConfig::default()) };
        if let Some(stateless) = value.get_mut("stateless") {
            value = stateless.take();
        }
        serde_json::from_value(value).map_err(|e| Error::Config(format!("pin_tracker: {e}")))
    }
}

mod optional_go_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::go_duration")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

fn parse_credentials(text: &str) -> Result<std::collections::BTreeMap<String, String>> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok((user.to_string(), password.to_string())),
            _ => Err(Error::Config("basic auth credentials must be user:password[,user:password]".into())),
        })
        .collect()
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

fn default_peername() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cluster-peer".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(dir: &Path, extra: &[&str]) -> Result<DaemonConfig> {
        let mut argv = vec!["cluster-sidecar", "--data-dir", dir.to_str().unwrap()];
        argv.extend_from_slice(extra);
        DaemonConfig::resolve(DaemonArgs::try_parse_from(argv).expect("valid flags"))
    }

    const SERVICE_JSON: &str = r#"{
        "cluster": {"peername": "from-file", "secret": "", "listen_multiaddress": "/ip4/127.0.0.1/tcp/19096",
                    "replication_factor_min": 2,
                    "replication_factor_max": 3, "monitor_ping_interval": "30s",
                    "pin_recover_interval": "1h0m0s", "leave_on_shutdown": false},
        "api": {"restapi": {"http_listen_multiaddress": "/ip4/127.0.0.1/tcp/19094",
                            "basic_auth_credentials": {"admin": "pw"}}},
        "ipfs_connector": {"ipfshttp": {"node_multiaddress": "/ip4/127.0.0.1/tcp/15001", "pin_timeout": "1m0s"}},
        "pin_tracker": {"stateless": {"concurrent_pins": 4, "max_pin_queue_size": 1000}},
        "informer": {"disk": {"metric_ttl": "30s"}}
    }"#;

    #[test]
    fn reads_the_reference_service_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SERVICE_FILE), SERVICE_JSON).unwrap();
        let config = resolve(dir.path(), &["--insecure-no-secret"]).unwrap();
        assert_eq!(config.cluster.peername, "from-file");
        assert_eq!((config.cluster.replication_factor_min, config.cluster.replication_factor_max), (2, 3));
        assert_eq!(config.cluster.monitor_ping_interval, Duration::from_secs(30));
        assert_eq!(config.cluster.tracker.pin_recover_interval, Duration::from_secs(3600));
        assert_eq!(config.cluster.tracker.concurrent_pins, 4);
        assert_eq!(config.api.http_listen_multiaddress.to_string(), "/ip4/127.0.0.1/tcp/19094");
        assert_eq!(config.api.basic_auth_credentials.unwrap()["admin"], "pw");
        assert_eq!(config.ipfs.pin_timeout, Duration::from_secs(60));
        assert!(config.insecure_no_secret, "an empty secret is no secret");
        let p2p = config.cluster.p2p;
        assert_eq!(p2p.secret, [0; 32]);
        assert_eq!(p2p.listen.to_string(), "/ip4/127.0.0.1/tcp/19096");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SERVICE_FILE), SERVICE_JSON).unwrap();
        let config = resolve(
            dir.path(),
            &[
                "--peername",
                "flag",
                "--replication-min",
                "-1",
                "--replication-max",
                "-1",
                "--concurrent-pins",
                "7",
                "--basic-auth",
                "a:1,b:2",
                "--pin-deadline",
                "90s",
                "--secret",
                &"5a".repeat(32),
                "--listen",
                "/ip4/127.0.0.2/tcp/9096",
            ],
        )
        .unwrap();
        assert_eq!(config.cluster.peername, "flag");
        assert_eq!((config.cluster.replication_factor_min, config.cluster.replication_factor_max), (-1, -1));
        assert_eq!(config.cluster.tracker.concurrent_pins, 7);
        assert_eq!(config.api.basic_auth_credentials.unwrap().len(), 2);
        assert_eq!(config.ipfs.pin_deadline, Duration::from_secs(90));
        let p2p = config.cluster.p2p;
        assert_eq!(p2p.secret, [0x5a; 32]);
        assert_eq!(p2p.listen.to_string(), "/ip4/127.0.0.2/tcp/9096");
    }

    #[test]
    fn the_secret_is_required_unless_explicitly_waived() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("--secret") && err.contains("CLUSTER_SECRET"), "{err}");
        let insecure = resolve(dir.path(), &["--insecure-no-secret"]).unwrap();
        assert!(insecure.insecure_no_secret);
        assert_eq!(insecure.cluster.p2p.listen.to_string(), "/ip4/0.0.0.0/tcp/9096");
        std::fs::write(dir.path().join(SERVICE_FILE), format!(r#"{{"cluster": {{"secret": "{}"}}}}"#, "01".repeat(32)))
            .unwrap();
        let from_file = resolve(dir.path(), &["--insecure-no-secret"]).unwrap();
        assert!(!from_file.insecure_no_secret, "a given secret is always used");
        assert_eq!(from_file.cluster.p2p.secret, [1; 32]);
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(dir.path(), &["--secret", "abc"]).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let err = resolve(dir.path(), &["--insecure-no-secret", "--basic-auth", "nopassword"]).unwrap_err().to_string();
        assert!(err.contains("user:password"), "{err}");
        let err = resolve(dir.path(), &["--insecure-no-secret", "--max-voters", "4"]).unwrap_err().to_string();
        assert!(err.contains("must be odd"), "{err}");
        std::fs::write(dir.path().join(SERVICE_FILE), "{ not json").unwrap();
        let err = resolve(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("service.json"), "{err}");
        assert!(DaemonArgs::try_parse_from(["cluster-sidecar", "--pin-timeout", "soon"]).is_err());
        assert!(DaemonArgs::try_parse_from(["cluster-sidecar", "--repin-after", "later"]).is_err());
    }

    #[test]
    fn consensus_settings() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = resolve(dir.path(), &["--insecure-no-secret"]).unwrap();
        assert!(defaults.cluster.consensus.auto_init);
        assert_eq!(defaults.cluster.consensus.max_voters, 5);
        assert_eq!(defaults.cluster.repin_after, Some(std::time::Duration::from_secs(300)));
        let seed = "/ip4/127.0.0.2/tcp/9096/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let set = resolve(
            dir.path(),
            &["--insecure-no-secret", "--bootstrap", seed, "--no-init", "--repin-after", "off", "--max-voters", "3"],
        )
        .unwrap();
        assert_eq!(set.cluster.consensus.bootstrap, vec![seed.parse::<Multiaddr>().unwrap()]);
        assert!(!set.cluster.consensus.auto_init);
        assert_eq!(set.cluster.repin_after, None);
        assert_eq!(set.cluster.consensus.max_voters, 3);
    }
}
