//! `cluster-ctl`: the `ipfs-cluster-ctl` verbs people use, with their flags and output.

mod args;
mod departure;
pub mod format;
pub mod wait;

use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::client::Client;
use crate::types::{parse_cid, ApiError, PinOptions};
use crate::{Error, Result};

pub use args::*;

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
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::types::PinMode;

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
