//! What `cluster-ctl`'s command line says: the commands, their flags, and the pin options and
//! uploads they stand for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use libp2p_identity::PeerId;

use crate::client::{AddContent, AddFile};
use crate::types::{parse_cid, parse_go_duration, Cid, PinMode, PinOptions};
use crate::{Error, Result};

#[derive(Parser, Debug)]
#[command(name = "cluster-ctl", version, about = "Command-line client of the IPFS Cluster REST API")]
pub struct Cli {
    /// Cluster API endpoint: a multiaddr or an http:// URL.
    #[arg(long, global = true, default_value = "/ip4/127.0.0.1/tcp/9094", env = "CLUSTER_HOST")]
    pub host: String,
    /// `user:password` for HTTP Basic authentication.
    #[arg(long = "basic-auth", global = true, env = "CLUSTER_CREDENTIALS", hide_env_values = true)]
    pub basic_auth: Option<String>,
    /// Output: human text, or the server's JSON objects.
    #[arg(long, global = true, value_enum, default_value_t = Encoding::Text)]
    pub enc: Encoding,
    /// Request timeout (`30s`, `2m`, or seconds); 0 waits forever.
    #[arg(long, global = true, default_value = "0", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the identity of the peer.
    Id,
    /// List cluster peers.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Pin, unpin and list pins.
    #[command(subcommand)]
    Pin(PinCommand),
    /// Show the status of pins (all, or the given CIDs).
    Status {
        cids: Vec<String>,
        /// Statuses to show: pinned, pinning, queued, error, remote...
        #[arg(long)]
        filter: Option<String>,
        /// Only this peer's view.
        #[arg(long)]
        local: bool,
    },
    /// Re-queue failed pins (all, or one CID).
    Recover {
        cid: Option<String>,
        #[arg(long)]
        local: bool,
    },
    /// Cluster health: connectivity graph, metrics, alerts.
    #[command(subcommand)]
    Health(HealthCommand),
    /// The REST API version of the peer.
    Version,
    /// Add files or directories to IPFS through the peer and pin them in the cluster.
    Add(AddArgs),
    /// Operations on the peers' IPFS daemons.
    #[command(subcommand)]
    Ipfs(IpfsCommand),
}

#[derive(Subcommand, Debug)]
pub enum IpfsCommand {
    /// Run garbage collection on the IPFS daemons of the cluster peers.
    Gc {
        /// Only on the contacted peer's daemon.
        #[arg(long)]
        local: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PeersCommand {
    /// List the members' IDs.
    Ls,
    /// Add a peer to the cluster (ours: the reference adds peers by bootstrapping them).
    Add {
        peer_id: String,
        /// Its cluster address (`/ip4/.../tcp/9096`); repeat for several.
        #[arg(long = "address")]
        addresses: Vec<String>,
    },
    /// Remove a peer from the cluster; it stops and moves its consensus data aside.
    Rm {
        peer_id: String,
        /// Remove it even when other members are unreachable and what is left could not lose
        /// another peer.
        #[arg(long)]
        force: bool,
    },
    /// Show consensus as this peer sees it: role, leader, term, members and voters (ours).
    Consensus,
    /// Wait until this peer was removed or its restart declared by the Kubernetes operator (ours:
    /// a peer pod's preStop hook). Exit 62 when nothing was decided in time.
    AwaitDeparture {
        /// How long to wait in all (the pod's grace period, less time to stop).
        #[arg(long = "wait-timeout", alias = "wt", default_value = "50s", value_parser = parse_duration)]
        wait_timeout: Duration,
    },
}

#[derive(Subcommand, Debug)]
pub enum PinCommand {
    /// Pin a CID or an /ipfs, /ipns or /ipld path.
    Add(PinAddArgs),
    /// Unpin a CID or path.
    Rm {
        target: String,
        #[arg(short, long)]
        wait: bool,
        #[arg(long = "wait-timeout", alias = "wt", default_value = "0", value_parser = parse_duration)]
        wait_timeout: Duration,
        #[arg(long = "no-status", alias = "ns")]
        no_status: bool,
    },
    /// Pin TO with the options of the existing pin FROM (the daemons fetch only what changed).
    Update(PinUpdateArgs),
    /// List pins (allocations) of the pinset, or one.
    Ls {
        cid: Option<String>,
        /// Pin types: pin, meta-pin, clusterdag-pin, shard-pin, all.
        #[arg(long, default_value = "pin")]
        filter: String,
    },
}

#[derive(Args, Debug)]
pub struct PinAddArgs {
    pub target: String,
    /// Sets both minimum and maximum replication (-1 = everywhere).
    #[arg(short, long, allow_negative_numbers = true)]
    pub replication: Option<i32>,
    /// recursive or direct.
    #[arg(long, default_value = "recursive")]
    pub mode: String,
    #[command(flatten)]
    pub pin: PinFlags,
    #[command(flatten)]
    pub after: AfterPin,
}

/// The pin options `pin add` and `add` share.
#[derive(Args, Debug)]
pub struct PinFlags {
    #[arg(long = "replication-min", alias = "rmin", allow_negative_numbers = true)]
    pub replication_min: Option<i32>,
    #[arg(long = "replication-max", alias = "rmax", allow_negative_numbers = true)]
    pub replication_max: Option<i32>,
    #[arg(short, long, default_value = "")]
    pub name: String,
    /// Unpin after this long (`24h`, `30m`).
    #[arg(long = "expire-in")]
    pub expire_in: Option<String>,
    /// key=value, repeatable.
    #[arg(long = "metadata")]
    pub metadata: Vec<String>,
    /// Comma-separated peer IDs to allocate to.
    #[arg(long = "allocations", alias = "allocs")]
    pub allocations: Option<String>,
}

/// What `pin add` and `pin update` do once the pin is committed.
#[derive(Args, Debug)]
pub struct AfterPin {
    /// Wait until pinned on its allocations.
    #[arg(short, long)]
    pub wait: bool,
    #[arg(long = "wait-timeout", alias = "wt", default_value = "0", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// Print the pin instead of fetching its status.
    #[arg(long = "no-status", alias = "ns")]
    pub no_status: bool,
}

#[derive(Args, Debug)]
pub struct PinUpdateArgs {
    /// The CID of the existing pin.
    pub from: String,
    /// The new CID or /ipfs, /ipns or /ipld path.
    pub to: String,
    #[arg(short, long, default_value = "")]
    pub name: String,
    /// Unpin after this long (`24h`, `30m`).
    #[arg(long = "expire-in")]
    pub expire_in: Option<String>,
    #[command(flatten)]
    pub after: AfterPin,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Files or directories; more than one are wrapped in a directory.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Add directories with their contents.
    #[arg(short, long)]
    pub recursive: bool,
    /// Include files whose names start with a dot (with --recursive).
    #[arg(short = 'H', long)]
    pub hidden: bool,
    /// Print only the CIDs, one per line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print only the root's CID.
    #[arg(short = 'Q', long)]
    pub quieter: bool,
    /// Wrap the files in a directory.
    #[arg(short, long = "wrap-with-directory")]
    pub wrap_with_directory: bool,
    /// `unixfs` (import files), or `car` (import one CAR file with one root).
    #[arg(long, default_value = "unixfs", value_parser = ["unixfs", "car"])]
    pub format: String,
    /// CID version of the DAG; 1 implies --raw-leaves.
    #[arg(long = "cid-version", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub cid_version: u8,
    /// Raw blocks for the leaves.
    #[arg(long = "raw-leaves")]
    pub raw_leaves: bool,
    /// Add through the contacted peer's daemon, which then holds the pin first.
    #[arg(long)]
    pub local: bool,
    /// Import without pinning.
    #[arg(long = "no-pin")]
    pub no_pin: bool,
    #[command(flatten)]
    pub pin: PinFlags,
}

#[derive(Subcommand, Debug)]
pub enum HealthCommand {
    /// The connectivity graph, in Graphviz dot.
    Graph,
    /// Metric names, or the latest metrics of one name.
    Metrics { name: Option<String> },
    /// Alerts raised by expired metrics.
    Alerts,
    /// Bytes sent and received by the peer's libp2p protocols.
    Bandwidth,
}

pub(super) fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    parse_go_duration(text).and_then(|d| d.to_std().ok()).ok_or_else(|| format!("invalid duration: {text}"))
}

impl PinAddArgs {
    pub fn options(&self) -> Result<PinOptions> {
        let mode = match self.mode.as_str() {
            "recursive" => PinMode::Recursive,
            "direct" => PinMode::Direct,
            other => return Err(Error::BadRequest(format!("unknown mode {other:?} (recursive or direct)"))),
        };
        let mut options = self.pin.options(self.replication)?;
        options.mode = mode;
        Ok(options)
    }
}

impl PinFlags {
    /// The options; `replication`, when given, sets both factors.
    pub fn options(&self, replication: Option<i32>) -> Result<PinOptions> {
        let bad = |m: String| Error::BadRequest(m);
        let mut options = PinOptions {
            replication_factor_min: replication.or(self.replication_min).unwrap_or(0),
            replication_factor_max: replication.or(self.replication_max).unwrap_or(0),
            name: self.name.clone(),
            expire_at: expiry(self.expire_in.as_deref())?,
            ..Default::default()
        };
        for pair in &self.metadata {
            let (k, v) =
                pair.split_once('=').ok_or_else(|| bad(format!("--metadata expects key=value, got {pair:?}")))?;
            options.metadata.insert(k.to_string(), v.to_string());
        }
        if let Some(list) = &self.allocations {
            options.user_allocations = list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse::<PeerId>().map_err(|e| bad(format!("invalid peer ID {s:?}: {e}"))))
                .collect::<Result<_>>()?;
        }
        options.validate_replication()?;
        Ok(options)
    }
}

/// The expiry time for `--expire-in`.
fn expiry(expire_in: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(text) = expire_in else { return Ok(None) };
    let ttl = parse_go_duration(text).ok_or_else(|| Error::BadRequest(format!("invalid --expire-in: {text}")))?;
    crate::types::expiry_after(ttl, text).map(Some)
}

impl PinUpdateArgs {
    pub fn options(&self) -> Result<PinOptions> {
        Ok(PinOptions {
            pin_update: Some(parse_cid(&self.from)?),
            name: self.name.clone(),
            expire_at: expiry(self.expire_in.as_deref())?,
            ..Default::default()
        })
    }
}

impl AddArgs {
    /// The query of `POST /add`, as `ipfs-cluster-ctl` builds it: several paths are wrapped, a
    /// CID version above 0 implies raw leaves, and a CAR cannot be wrapped.
    pub fn query(&self) -> Result<Vec<(String, String)>> {
        let wrap = self.wrap_with_directory || self.paths.len() > 1;
        if wrap && self.format == "car" {
            return Err(Error::BadRequest(
                "only a single CAR file can be added and wrap-with-directory is not supported".into(),
            ));
        }
        let mut query = self.pin.options(None)?.to_query();
        let flag = |on: bool| on.to_string();
        query.extend([
            ("format".to_string(), self.format.clone()),
            ("cid-version".to_string(), self.cid_version.to_string()),
            ("raw-leaves".to_string(), flag(self.raw_leaves || self.cid_version > 0)),
            ("wrap-with-directory".to_string(), flag(wrap)),
            ("hidden".to_string(), flag(self.hidden)),
            ("local".to_string(), flag(self.local)),
            ("no-pin".to_string(), flag(self.no_pin)),
        ]);
        Ok(query)
    }

    /// The upload's parts: each path, and with --recursive what directories hold (dot-files only
    /// with --hidden), parents before their entries.
    pub fn files(&self) -> Result<Vec<AddFile>> {
        let mut files = Vec::new();
        for path in &self.paths {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            self.collect(path, name, &mut files)?;
        }
        Ok(files)
    }

    fn collect(&self, path: &Path, name: String, files: &mut Vec<AddFile>) -> Result<()> {
        if !path.is_dir() {
            // A missing file fails here, before anything is sent.
            std::fs::metadata(path)
                .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
            files.push(AddFile { name, content: AddContent::Path(path.to_path_buf()) });
            return Ok(());
        }
        if !self.recursive {
            return Err(Error::BadRequest(format!("{} is a directory, use -r to add it", path.display())));
        }
        files.push(AddFile { name: name.clone(), content: AddContent::Directory });
        let mut entries = std::fs::read_dir(path)?.collect::<std::io::Result<Vec<_>>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let entry_name = entry.file_name().to_string_lossy().into_owned();
            if self.hidden || !entry_name.starts_with('.') {
                self.collect(&entry.path(), format!("{name}/{entry_name}"), files)?;
            }
        }
        Ok(())
    }
}

/// A CID, or an IPFS path (`/ipfs/...`, `/ipns/...`, `/ipld/...`).
pub(super) enum Target {
    Cid(Cid),
    Path(String),
}

pub(super) fn target(text: &str) -> Result<Target> {
    if ["/ipfs/", "/ipns/", "/ipld/"].iter().any(|p| text.starts_with(p)) {
        Ok(Target::Path(text.to_string()))
    } else {
        parse_cid(text).map(Target::Cid)
    }
}

pub(super) fn parse_peer_id(text: &str) -> Result<libp2p_identity::PeerId> {
    text.parse().map_err(|e| Error::BadRequest(format!("invalid peer ID {text}: {e}")))
}
