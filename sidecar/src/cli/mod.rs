//! `cluster-ctl`: the `ipfs-cluster-ctl` verbs people use, with their flags and output.

pub mod format;
pub mod wait;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::{Stream, StreamExt};
use libp2p_identity::PeerId;
use serde::Serialize;

use crate::client::Client;
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
    #[arg(long = "replication-min", alias = "rmin", allow_negative_numbers = true)]
    pub replication_min: Option<i32>,
    #[arg(long = "replication-max", alias = "rmax", allow_negative_numbers = true)]
    pub replication_max: Option<i32>,
    #[arg(short, long, default_value = "")]
    pub name: String,
    /// recursive or direct.
    #[arg(long, default_value = "recursive")]
    pub mode: String,
    /// Unpin after this long (`24h`, `30m`).
    #[arg(long = "expire-in")]
    pub expire_in: Option<String>,
    /// key=value, repeatable.
    #[arg(long = "metadata")]
    pub metadata: Vec<String>,
    /// Comma-separated peer IDs to allocate to.
    #[arg(long = "allocations", alias = "allocs")]
    pub allocations: Option<String>,
    /// Wait until pinned on its allocations.
    #[arg(short, long)]
    pub wait: bool,
    #[arg(long = "wait-timeout", alias = "wt", default_value = "0", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// Print the pin instead of fetching its status.
    #[arg(long = "no-status", alias = "ns")]
    pub no_status: bool,
}

#[derive(Subcommand, Debug)]
pub enum HealthCommand {
    /// The connectivity graph, in Graphviz dot.
    Graph,
    /// Metric names, or the latest metrics of one name.
    Metrics { name: Option<String> },
    /// Alerts raised by expired metrics.
    Alerts,
}

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    parse_go_duration(text).and_then(|d| d.to_std().ok()).ok_or_else(|| format!("invalid duration: {text}"))
}

impl PinAddArgs {
    pub fn options(&self) -> Result<PinOptions> {
        let bad = |m: String| Error::BadRequest(m);
        let mode = match self.mode.as_str() {
            "recursive" => PinMode::Recursive,
            "direct" => PinMode::Direct,
            other => return Err(bad(format!("unknown mode {other:?} (recursive or direct)"))),
        };
        let mut options = PinOptions {
            replication_factor_min: self.replication.or(self.replication_min).unwrap_or(0),
            replication_factor_max: self.replication.or(self.replication_max).unwrap_or(0),
            name: self.name.clone(),
            mode,
            ..Default::default()
        };
        if let Some(text) = &self.expire_in {
            let ttl = parse_go_duration(text).ok_or_else(|| bad(format!("invalid --expire-in: {text}")))?;
            options.expire_at = Some(crate::types::expiry_after(ttl, text)?);
        }
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

/// Runs the command, printing its output on stdout.
pub async fn run(cli: Cli) -> Result<()> {
    let client = client(&cli)?;
    let out = Output(cli.enc);
    match cli.command {
        Command::Id => out.one(&client.id().await?, format::id),
        Command::Version => out.one(&client.version().await?, |v| format!("{}\n", v.version)),
        Command::Peers(PeersCommand::Ls) => out.stream(client.peers().await?, format::id).await,
        Command::Peers(PeersCommand::Add { peer_id, addresses }) => {
            let addresses = addresses
                .iter()
                .map(|a| a.parse().map_err(|e| Error::BadRequest(format!("invalid address {a}: {e}"))))
                .collect::<Result<Vec<_>>>()?;
            out.one(&client.add_peer(&parse_peer_id(&peer_id)?, &addresses).await?, format::id)
        }
        Command::Peers(PeersCommand::Rm { peer_id, force }) => {
            client.remove_peer(&parse_peer_id(&peer_id)?, force).await?;
            out.one(&format!("Peer {peer_id} removed\n"), |text| text.clone())
        }
        Command::Peers(PeersCommand::Consensus) => out.one(&client.consensus().await?, format::consensus),
        Command::Pin(PinCommand::Add(args)) => pin_add(&client, &out, &args).await,
        Command::Pin(PinCommand::Rm { target: t, wait, wait_timeout, no_status }) => {
            let pin = match target(&t)? {
                Target::Cid(cid) => client.unpin(&cid).await?,
                Target::Path(path) => client.unpin_path(&path).await?,
            };
            if no_status {
                return out.one(&pin, format::pin);
            }
            if wait {
                wait::wait(&client, &pin.cid, wait::Target::Unpinned, &[], wait_timeout).await?;
            }
            out.one(&client.status(&pin.cid, false).await?, format::global_pin_info)
        }
        Command::Pin(PinCommand::Ls { cid: Some(cid), .. }) => {
            out.one(&client.allocation(&parse_cid(&cid)?).await?, format::pin)
        }
        Command::Pin(PinCommand::Ls { cid: None, filter }) => {
            let types = crate::cluster::PinTypeFilter::parse(&filter).map_err(Error::BadRequest)?;
            out.stream(client.allocations(&types.0).await?, format::pin).await
        }
        Command::Status { cids, filter, local } => {
            let cids = cids.iter().map(|c| parse_cid(c)).collect::<Result<Vec<_>>>()?;
            if let [cid] = cids.as_slice() {
                return out.one(&client.status(cid, local).await?, format::global_pin_info);
            }
            out.stream(client.status_all(filter.as_deref(), &cids, local).await?, format::global_pin_info).await
        }
        Command::Recover { cid: Some(cid), local } => {
            out.one(&client.recover(&parse_cid(&cid)?, local).await?, format::global_pin_info)
        }
        Command::Recover { cid: None, local } => {
            out.stream(client.recover_all(local).await?, format::global_pin_info).await
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
    }
}

async fn pin_add(client: &Client, out: &Output, args: &PinAddArgs) -> Result<()> {
    let options = args.options()?;
    let pin = match target(&args.target)? {
        Target::Cid(cid) => client.pin(&cid, &options).await?,
        Target::Path(path) => client.pin_path(&path, &options).await?,
    };
    if args.no_status {
        return out.one(&pin, format::pin);
    }
    if args.wait {
        wait::wait(client, &pin.cid, wait::Target::Pinned, &pin.allocations, args.wait_timeout).await?;
    }
    out.one(&client.status(&pin.cid, false).await?, format::global_pin_info)
}

struct Output(Encoding);

impl Output {
    fn one<T: Serialize>(&self, value: &T, text: impl Fn(&T) -> String) -> Result<()> {
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
    ) -> Result<()> {
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
        Error::Io(_) | Error::Config(_) => 0,
        _ => 500,
    }
}

/// What `cluster-ctl` prints for a failed command.
pub fn error_text(err: &Error) -> String {
    format!("An error occurred:\n  Code: {}\n  Message: {err}\n", error_code(err))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(args.wait && args.wait_timeout == Duration::from_secs(30));
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
    fn errors_print_like_the_reference() {
        let text = error_text(&Error::NotFound("pin is not part of the pinset".into()));
        assert_eq!(text, "An error occurred:\n  Code: 404\n  Message: pin is not part of the pinset\n");
        assert_eq!(pretty(&serde_json::json!({"a": 1})), "{\n    \"a\": 1\n}");
    }
}
