//! `cluster-ctl`: the `ipfs-cluster-ctl` verbs people use, with their flags and output.

mod departure;
pub mod format;
pub mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::{Stream, StreamExt};
use libp2p_identity::PeerId;
use serde::Serialize;

use crate::client::{AddContent, AddFile, Client};
use crate::types::{parse_cid, parse_go_duration, ApiError, Cid, PinMode, PinOptions};
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

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
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
enum Target {
    Cid(Cid),
    Path(String),
}

fn target(text: &str) -> Result<Target> {
    if ["/ipfs/", "/ipns/", "/ipld/"].iter().any(|p| text.starts_with(p)) {
        Ok(Target::Path(text.to_string()))
    } else {
        parse_cid(text).map(Target::Cid)
    }
}

fn parse_peer_id(text: &str) -> Result<libp2p_identity::PeerId> {
    text.parse().map_err(|e| Error::BadRequest(format!("invalid peer ID {text}: {e}")))
}

pub fn client(cli: &Cli) -> Result<Client> {
    let mut client = Client::new(&cli.host)?;
    if let Some(credentials) = &cli.basic_auth {
        let (user, password) =
            credentials.split_once(':').ok_or_else(|| Error::Config("--basic-auth expects user:password".into()))?;
        client = client.with_basic_auth(user, password);
    }
    if !cli.timeout.is_zero() {
        client = client.with_timeout(cli.timeout);
    }
    Ok(client)
}

/// Why a command failed, which decides where its message goes and the exit code, as
/// `ipfs-cluster-ctl` does (scripts test both).
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or local trouble, found before or apart from the API call:
    /// `error <doing>: <message>` on stderr.
    Local { doing: &'static str, error: Error },
    /// The API call failed: its error object on stdout, in the chosen encoding.
    Api(Error),
}

/// The errors of client calls are API errors; local ones are marked with [`local`].
impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Api(error)
    }
}

/// Marks an error as local, for `?`: `parse_cid(text).map_err(local("parsing cid"))?`.
fn local(doing: &'static str) -> impl FnOnce(Error) -> Failure {
    move |error| Failure::Local { doing, error }
}

impl Failure {
    /// 2 when the server answered with an error; 1 for usage and local errors and when the server
    /// could not be reached (code 0); 62 (ETIME) when waiting ran out of time.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Local { error: Error::Timeout(_), .. } => 62,
            Failure::Local { .. } => 1,
            Failure::Api(error) if error_code(error) == 0 => 1,
            Failure::Api(_) => 2,
        }
    }

    /// What to print: `(on_stdout, text)`.
    pub fn message(&self, enc: Encoding) -> (bool, String) {
        match self {
            Failure::Local { doing, error } => (false, format!("error {doing}: {error}\n")),
            Failure::Api(error) => {
                let api = ApiError { code: error_code(error), message: error.to_string() };
                match enc {
                    Encoding::Text => {
                        (true, format!("An error occurred:\n  Code: {}\n  Message: {}\n", api.code, api.message))
                    }
                    Encoding::Json => (true, format!("{}\n", pretty(&api))),
                }
            }
        }
    }
}

/// Runs the command, printing its output on stdout.
pub async fn run(cli: Cli) -> std::result::Result<(), Failure> {
    let client = client(&cli).map_err(local("creating API client"))?;
    let out = Output(cli.enc);
    match cli.command {
        Command::Id => out.one(&client.id().await?, format::id),
        Command::Version => out.one(&client.version().await?, |v| format!("{}\n", v.version)),
        Command::Peers(PeersCommand::Ls) => out.stream(client.peers().await?, format::id).await,
        Command::Peers(PeersCommand::Add { peer_id, addresses }) => {
            let addresses = addresses
                .iter()
                .map(|a| a.parse().map_err(|e| Error::BadRequest(format!("invalid address {a}: {e}"))))
                .collect::<Result<Vec<_>>>()
                .map_err(local("parsing addresses"))?;
            let peer = parse_peer_id(&peer_id).map_err(local("parsing peer ID"))?;
            out.one(&client.add_peer(&peer, &addresses).await?, format::id)
        }
        Command::Peers(PeersCommand::Rm { peer_id, force }) => {
            client.remove_peer(&parse_peer_id(&peer_id).map_err(local("parsing peer ID"))?, force).await?;
            out.one(&format!("Peer {peer_id} removed\n"), |text| text.clone())
        }
        Command::Peers(PeersCommand::Consensus) => out.one(&client.consensus().await?, format::consensus),
        Command::Peers(PeersCommand::AwaitDeparture { wait_timeout }) => {
            departure::await_departure(&client, &out, wait_timeout).await
        }
        Command::Pin(PinCommand::Add(args)) => {
            let options = args.options().map_err(local("parsing pin options"))?;
            pin(&client, &out, &args.target, &options, &args.after).await
        }
        Command::Pin(PinCommand::Update(args)) => {
            let options = args.options().map_err(local("parsing from Cid"))?;
            pin(&client, &out, &args.to, &options, &args.after).await
        }
        Command::Pin(PinCommand::Rm { target: t, wait, wait_timeout, no_status }) => {
            let pin = match target(&t).map_err(local("parsing cid"))? {
                Target::Cid(cid) => client.unpin(&cid).await?,
                Target::Path(path) => client.unpin_path(&path).await?,
            };
            if no_status {
                return out.one(&pin, format::pin);
            }
            if wait {
                wait::wait(&client, &pin.cid, wait::Target::Unpinned, &[], wait_timeout)
                    .await
                    .map_err(local("waiting for pin status"))?;
            }
            out.one(&client.status(&pin.cid, false).await?, format::global_pin_info)
        }
        Command::Pin(PinCommand::Ls { cid: Some(cid), .. }) => {
            out.one(&client.allocation(&parse_cid(&cid).map_err(local("parsing cid"))?).await?, format::pin)
        }
        Command::Pin(PinCommand::Ls { cid: None, filter }) => {
            let types = crate::cluster::PinTypeFilter::parse(&filter)
                .map_err(Error::BadRequest)
                .map_err(local("parsing filter"))?;
            out.stream(client.allocations(&types.0).await?, format::pin).await
        }
        Command::Status { cids, filter, local: only_here } => {
            let cids = cids.iter().map(|c| parse_cid(c)).collect::<Result<Vec<_>>>().map_err(local("parsing cid"))?;
            if let [cid] = cids.as_slice() {
                return out.one(&client.status(cid, only_here).await?, format::global_pin_info);
            }
            out.stream(client.status_all(filter.as_deref(), &cids, only_here).await?, format::global_pin_info).await
        }
        Command::Recover { cid: Some(cid), local: only_here } => {
            let cid = parse_cid(&cid).map_err(local("parsing cid"))?;
            out.one(&client.recover(&cid, only_here).await?, format::global_pin_info)
        }
        Command::Recover { cid: None, local: only_here } => {
            out.stream(client.recover_all(only_here).await?, format::global_pin_info).await
        }
        Command::Health(HealthCommand::Graph) => out.one(&client.health_graph().await?, format::graph),
        Command::Health(HealthCommand::Metrics { name: None }) => {
            out.one(&client.metric_names().await?, |names| names.iter().map(|n| format!("{n}\n")).collect())
        }
        Command::Health(HealthCommand::Metrics { name: Some(name) }) => {
            let now = chrono::Utc::now();
            out.one(&client.metrics(&name).await?, |ms| ms.iter().map(|m| format::metric(m, now)).collect())
        }
        Command::Health(HealthCommand::Alerts) => {
            let now = chrono::Utc::now();
            out.one(&client.alerts().await?, |alerts| alerts.iter().map(|a| format::alert(a, now)).collect())
        }
        Command::Health(HealthCommand::Bandwidth) => out.one(&client.bandwidth().await?, format::bandwidth),
        Command::Add(args) => add(&client, &out, &args).await,
        Command::Ipfs(IpfsCommand::Gc { local: only_here }) => {
            out.one(&client.ipfs_gc(only_here).await?, format::repo_gc)
        }
    }
}

/// `pin add` and `pin update`: pins `target` with `options`, then shows the pin, waits for it,
/// or shows its status.
async fn pin(
    client: &Client,
    out: &Output,
    target_text: &str,
    options: &PinOptions,
    after: &AfterPin,
) -> std::result::Result<(), Failure> {
    let pin = match target(target_text).map_err(local("parsing cid"))? {
        Target::Cid(cid) => client.pin(&cid, options).await?,
        Target::Path(path) => client.pin_path(&path, options).await?,
    };
    if after.no_status {
        return out.one(&pin, format::pin);
    }
    if after.wait {
        wait::wait(client, &pin.cid, wait::Target::Pinned, &pin.allocations, after.wait_timeout)
            .await
            .map_err(local("waiting for pin status"))?;
    }
    out.one(&client.status(&pin.cid, false).await?, format::global_pin_info)
}

/// `add`: each added entry as it comes (with -Q only the last one, the root).
async fn add(client: &Client, out: &Output, args: &AddArgs) -> std::result::Result<(), Failure> {
    let query = args.query().map_err(local("parsing add options"))?;
    let files = args.files().map_err(local("reading files"))?;
    let mut added = client.add(files, &query).await?;
    let quiet = args.quiet || args.quieter;
    let mut last = None;
    while let Some(entry) = added.next().await {
        let entry = entry?;
        if !args.quieter {
            out.one(&entry, |e| format::added(e, quiet))?;
        }
        last = Some(entry);
    }
    match last {
        Some(root) if args.quieter => out.one(&root, |e| format::added(e, quiet)),
        _ => Ok(()),
    }
}

struct Output(Encoding);

impl Output {
    fn one<T: Serialize>(&self, value: &T, text: impl Fn(&T) -> String) -> std::result::Result<(), Failure> {
        match self.0 {
            Encoding::Text => print!("{}", text(value)),
            Encoding::Json => println!("{}", pretty(value)),
        }
        Ok(())
    }

    async fn stream<T: Serialize>(
        &self,
        mut items: impl Stream<Item = Result<T>> + Unpin,
        text: impl Fn(&T) -> String,
    ) -> std::result::Result<(), Failure> {
        while let Some(item) = items.next().await {
            self.one(&item?, &text)?;
        }
        Ok(())
    }
}

/// Four-space indented JSON, as the reference prints it.
fn pretty<T: Serialize>(value: &T) -> String {
    let mut buf = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    match value.serialize(&mut ser) {
        Ok(()) => String::from_utf8(buf).unwrap_or_default(),
        Err(e) => format!("{{\"error\": \"cannot encode output: {e}\"}}"),
    }
}

/// The HTTP-ish code shown for an error (0 when the server was never reached).
pub fn error_code(err: &Error) -> u16 {
    match err {
        Error::InvalidCid(_) | Error::BadRequest(_) => 400,
        Error::Unauthorized(_) => 401,
        Error::NotFound(_) => 404,
        Error::Remote { code, .. } => *code,
        Error::Io(_) | Error::Config(_) | Error::Timeout(_) => 0,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("cluster-ctl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn pin_add_flags_become_options() {
        let cli = parse(&[
            "--host",
            "http://10.0.0.1:9094",
            "pin",
            "add",
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
            "--rmin",
            "2",
            "--replication-max",
            "3",
            "--name",
            "site",
            "--mode",
            "direct",
            "--metadata",
            "a=1",
            "--metadata",
            "b=x=y",
            "--expire-in",
            "1h",
            "--wait",
            "--wait-timeout",
            "30s",
        ]);
        assert_eq!(cli.host, "http://10.0.0.1:9094");
        let Command::Pin(PinCommand::Add(args)) = cli.command else { panic!("not pin add") };
        let opts = args.options().unwrap();
        assert_eq!((opts.replication_factor_min, opts.replication_factor_max), (2, 3));
        assert_eq!((opts.name.as_str(), opts.mode), ("site", PinMode::Direct));
        assert_eq!(opts.metadata.get("b").map(String::as_str), Some("x=y"));
        assert!(opts.expire_at.is_some());
        assert!(args.after.wait && args.after.wait_timeout == Duration::from_secs(30));
    }

    #[test]
    fn bad_pin_flags_are_errors() {
        let opts = |extra: &[&str]| {
            let mut args = vec!["pin", "add", "Qm"];
            args.extend_from_slice(extra);
            let Command::Pin(PinCommand::Add(a)) = parse(&args).command else { panic!() };
            a.options()
        };
        assert!(opts(&["--replication", "-1"]).is_ok());
        assert!(opts(&["--rmin", "3", "--rmax", "1"]).is_err());
        assert!(opts(&["--metadata", "novalue"]).is_err());
        assert!(opts(&["--allocations", "notapeer"]).is_err());
        assert!(opts(&["--mode", "sideways"]).is_err());
    }

    #[test]
    fn global_flags_and_targets() {
        let cli = parse(&["status", "--local", "--filter", "pinned,error", "--enc", "json", "--timeout", "45"]);
        assert_eq!((cli.enc, cli.timeout), (Encoding::Json, Duration::from_secs(45)));
        assert!(matches!(target("/ipns/example.com").unwrap(), Target::Path(_)));
        assert!(matches!(target("bafy-not-a-cid"), Err(Error::InvalidCid(_))));
        let with_auth = Cli { basic_auth: Some("nocolon".into()), ..parse(&["id"]) };
        assert!(client(&with_auth).is_err());
    }

    #[test]
    fn failures_print_and_exit_like_the_reference() {
        let not_found = Failure::Api(Error::NotFound("pin is not part of the pinset".into()));
        let cases: [(Failure, Encoding, u8, bool, &str); 6] = [
            (
                not_found,
                Encoding::Text,
                2,
                true,
                "An error occurred:\n  Code: 404\n  Message: pin is not part of the pinset\n",
            ),
            (
                Failure::Api(Error::Unauthorized("unauthorized: access denied".into())),
                Encoding::Json,
                2,
                true,
                "{\n    \"code\": 401,\n    \"message\": \"unauthorized: access denied\"\n}\n",
            ),
            (
                Failure::Api(Error::Io(std::io::Error::other("connection refused"))),
                Encoding::Text,
                1,
                true,
                "An error occurred:\n  Code: 0\n  Message: connection refused\n",
            ),
            (
                Failure::Api(Error::Timeout("GET /id".into())),
                Encoding::Json,
                1,
                true,
                "{\n    \"code\": 0,\n    \"message\": \"timed out: GET /id\"\n}\n",
            ),
            (
                Failure::Local { doing: "parsing cid", error: Error::InvalidCid("bad".into()) },
                Encoding::Json,
                1,
                false,
                "error parsing cid: bad\n",
            ),
            (
                Failure::Local { doing: "waiting for pin status", error: Error::Timeout("slow".into()) },
                Encoding::Text,
                62,
                false,
                "error waiting for pin status: timed out: slow\n",
            ),
        ];
        for (failure, enc, code, on_stdout, text) in cases {
            assert_eq!(failure.exit_code(), code, "{failure:?}");
            assert_eq!(failure.message(enc), (on_stdout, text.to_string()), "{failure:?}");
        }
        assert_eq!(pretty(&serde_json::json!({"a": 1})), "{\n    \"a\": 1\n}");
    }

    #[test]
    fn pin_update_and_gc_parse() {
        let cli = parse(&["pin", "update", CID, "/ipfs/bafkqaaa", "--name", "v2", "--no-status"]);
        let Command::Pin(PinCommand::Update(args)) = cli.command else { panic!("not pin update") };
        let opts = args.options().unwrap();
        assert_eq!((opts.pin_update.map(|c| c.to_string()), opts.name.as_str()), (Some(CID.to_string()), "v2"));
        assert!(args.after.no_status && args.to == "/ipfs/bafkqaaa");
        let Command::Pin(PinCommand::Update(bad)) = parse(&["pin", "update", "nope", CID]).command else { panic!() };
        assert!(bad.options().is_err());
        assert!(matches!(parse(&["ipfs", "gc", "--local"]).command, Command::Ipfs(IpfsCommand::Gc { local: true })));
    }

    fn add_args(args: &[&str]) -> AddArgs {
        let mut all = vec!["add"];
        all.extend_from_slice(args);
        let Command::Add(add) = parse(&all).command else { panic!("not add") };
        add
    }

    #[test]
    fn add_flags_become_the_query() {
        let query = |args: &[&str]| -> Vec<(String, String)> { add_args(args).query().unwrap() };
        let get = |q: &[(String, String)], key: &str| q.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let q = query(&["a", "--name", "site", "--rmin", "1", "--rmax", "2", "--cid-version", "1", "-Q"]);
        assert_eq!(get(&q, "name").as_deref(), Some("site"));
        assert_eq!((get(&q, "replication-min"), get(&q, "replication-max")), (Some("1".into()), Some("2".into())));
        assert_eq!((get(&q, "cid-version"), get(&q, "raw-leaves")), (Some("1".into()), Some("true".into())));
        assert_eq!(get(&q, "wrap-with-directory").as_deref(), Some("false"));
        assert_eq!(get(&query(&["a", "b"]), "wrap-with-directory").as_deref(), Some("true"), "several paths wrap");
        assert_eq!(get(&query(&["a.car", "--format", "car"]), "format").as_deref(), Some("car"));
        assert!(add_args(&["a.car", "--format", "car", "-w"]).query().is_err(), "a CAR cannot be wrapped");
        assert!(add_args(&["a", "--rmin", "3", "--rmax", "1"]).query().is_err());
        assert!(Cli::try_parse_from(["cluster-ctl", "add"]).is_err(), "a path is required");
        assert!(Cli::try_parse_from(["cluster-ctl", "add", "a", "--cid-version", "2"]).is_err());
    }

    #[test]
    fn add_walks_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(root.join("css")).unwrap();
        std::fs::write(root.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(root.join("css/a.css"), "p{}").unwrap();
        std::fs::write(root.join(".secret"), "x").unwrap();
        let root_arg = root.to_string_lossy().into_owned();
        let names =
            |args: &[&str]| -> Vec<String> { add_args(args).files().unwrap().into_iter().map(|f| f.name).collect() };
        assert_eq!(names(&[&root_arg, "-r"]), ["site", "site/css", "site/css/a.css", "site/index.html"]);
        assert_eq!(names(&[&root_arg, "-r", "-H"])[1], "site/.secret");
        assert!(add_args(&[&root_arg]).files().is_err(), "a directory needs -r");
        assert!(add_args(&[&format!("{root_arg}/missing")]).files().is_err());
    }
}
