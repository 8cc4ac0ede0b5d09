//! [`KuboClient`]: the [`IpfsConnector`] for a real daemon, over the Kubo RPC API (`POST /api/v0/...`).
//! Kubo is what users run; js-ipfs (the daemon of our end-to-end tests) serves the same API with the
//! differences noted where they matter.
//!
//! HTTP plumbing lives in `rpc` (requests, error envelopes) and `body` (NDJSON, trailers); the
//! JSON shapes in `responses`. This file holds what each call means.

mod config;
mod responses;
mod rpc;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use tokio::time::Instant;

pub use self::config::KuboConfig;
use self::responses::{
    pin_mode_of, AddLine, GcLine, IdResponse, PinAddLine, PinLsLine, RepoStatResponse, ResolveResponse,
    SwarmConnectResponse, SwarmPeersResponse,
};
use self::rpc::Rpc;
use super::car::ByteStream;
use super::{AddRequest, AddedEntry, GcKey, IpfsConnector, RepoStat};
use crate::ndjson::{decode_line, read_to_end, NdjsonReader, IPFS_DAEMON};
use crate::types::{format_go_duration, Cid, CidKey, IpfsId, PinMode};
use crate::{Error, Result};

/// Longest pause between two readiness probes in [`KuboClient::wait_ready`].
const MAX_READY_BACKOFF: Duration = Duration::from_secs(2);

pub struct KuboClient {
    rpc: Rpc,
    config: KuboConfig,
}

impl KuboClient {
    /// Fails only on an unusable `node_multiaddress`; nothing is contacted yet. The connections it
    /// pools belong to the Tokio runtime that first uses them: use one client per runtime.
    pub fn new(config: KuboConfig) -> Result<Self> {
        Ok(KuboClient { rpc: Rpc::new(&config.node_multiaddress)?, config })
    }

    /// Polls `id` until the daemon answers, backing off exponentially up to 2 s between probes.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<IpfsId> {
        let started = Instant::now();
        let daemon = self.rpc.base_url();
        let mut attempts = 0u32;
        let mut last_error = None;
        let polling = async {
            let mut backoff = Duration::from_millis(50);
            loop {
                attempts += 1;
                match self.id().await {
                    Ok(id) => return id,
                    Err(error) => {
                        if attempts == 1 {
                            tracing::info!(daemon, %error, "waiting for the IPFS daemon");
                        } else {
                            tracing::debug!(daemon, attempts, waited = ?started.elapsed(), %error, "IPFS daemon not ready yet");
                        }
                        last_error = Some(error);
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_READY_BACKOFF);
            }
        };
        let outcome = tokio::time::timeout(timeout, polling).await;
        match outcome {
            Ok(id) => {
                tracing::info!(daemon, attempts, elapsed = ?started.elapsed(), "IPFS daemon is ready");
                Ok(id)
            }
            Err(_) => {
                let cause = last_error.map_or_else(|| "no answer yet".to_string(), |e| e.to_string());
                Err(Error::Timeout(format!(
                    "IPFS daemon at {daemon} not ready after {} ({attempts} attempts): {cause}",
                    format_go_duration(timeout)
                )))
            }
        }
    }

    /// Runs a short call under `request_timeout`.
    async fn short<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        within(self.config.request_timeout, what, call).await
    }

    /// A call whose whole (small) answer is one JSON value.
    async fn call_json<T: serde::de::DeserializeOwned>(&self, command: &str, query: &[(&str, &str)]) -> Result<T> {
        let response = self.rpc.call(command, query).await?;
        decode_line(&read_to_end(response.into_body(), IPFS_DAEMON).await?, IPFS_DAEMON)
    }

    /// Best-effort `swarm/connect` to the peers said to have the content, all at once.
    async fn connect_origins(&self, origins: &[Multiaddr]) {
        let attempts = origins.iter().map(|origin| async move {
            if let Err(error) = self.swarm_connect(origin).await {
                tracing::warn!(%origin, %error, "could not connect to a pin origin; pinning anyway");
            }
        });
        futures::future::join_all(attempts).await;
    }

    /// Reads `pin/add`'s answer until it confirms `cid`. Kubo reports the number of blocks fetched
    /// about every second, changed or not: once reports come, the pin fails when that number has not
    /// grown for `pin_timeout`. (js-ipfs reports nothing; `pin_deadline` bounds it.)
    async fn follow_pin_add(&self, cid: &Cid, query: &[(&str, &str)]) -> Result<()> {
        let response = self.rpc.call("pin/add", query).await?;
        let mut lines = NdjsonReader::new(response.into_body(), IPFS_DAEMON);
        // The blocks fetched so far, and when the pin counts as stalled unless that grows.
        let mut progress: Option<(u64, Instant)> = None;
        loop {
            let next = match progress {
                Some((_, stalled_at)) => {
                    tokio::time::timeout_at(stalled_at, lines.next::<PinAddLine>()).await.map_err(|_| {
                        Error::Timeout(format!(
                            "pin of {cid} stalled: no progress for {}",
                            format_go_duration(self.config.pin_timeout)
                        ))
                    })?
                }
                None => lines.next::<PinAddLine>().await,
            };
            let Some(line) = next? else {
                return Err(Error::Ipfs(format!("pin/add of {cid} ended without confirming the pin")));
            };
            if let Some(pins) = line.pins {
                let wanted = CidKey::of(cid);
                let confirmed = pins.iter().any(|p| Cid::try_from(p.as_str()).is_ok_and(|p| CidKey::of(&p) == wanted));
                return if confirmed {
                    Ok(())
                } else {
                    Err(Error::Ipfs(format!("pin/add of {cid} confirmed other pins: {pins:?}")))
                };
            }
            if let Some(fetched) = line.progress {
                if progress.is_none_or(|(before, _)| fetched > before) {
                    tracing::trace!(%cid, fetched, "pin progress");
                    progress = Some((fetched, Instant::now() + self.config.pin_timeout));
                }
            }
        }
    }

    /// Adds the pins of one type to `pins`; a pause of `request_timeout` between lines fails it.
    async fn list_pins(&self, mode: PinMode, pins: &mut HashMap<CidKey, PinMode>) -> Result<()> {
        let limit = self.config.request_timeout;
        let query = [("stream", "true"), ("type", mode.as_str())];
        let response = within(limit, "pin/ls", self.rpc.call("pin/ls", &query)).await?;
        let mut lines = NdjsonReader::new(response.into_body(), IPFS_DAEMON);
        while let Some(line) = within(limit, "pin/ls (next line)", lines.next::<PinLsLine>()).await? {
            collect_pins(line, mode, pins)?;
        }
        Ok(())
    }
}

/// Adds one `pin/ls` line's pins to `pins`. A line without a type is taken to be of the type that
/// was asked for.
fn collect_pins(line: PinLsLine, asked: PinMode, pins: &mut HashMap<CidKey, PinMode>) -> Result<()> {
    for (text, pin_type) in line.into_pins() {
        let mode = if pin_type.is_empty() { Some(asked) } else { pin_mode_of(&pin_type) };
        let Some(mode) = mode else { continue };
        let cid = Cid::try_from(text.as_str())
            .map_err(|e| Error::Ipfs(format!("pin/ls answered an invalid CID {text:?}: {e}")))?;
        pins.entry(CidKey::of(&cid)).or_insert(mode);
    }
    Ok(())
}

/// Runs `call` under `limit`, naming `what` in the timeout error.
async fn within<T>(limit: Duration, what: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| Error::Timeout(format!("IPFS {what} took longer than {}", format_go_duration(limit))))?
}

/// How the daemon says a CID is not (directly or recursively) pinned: js-ipfs `... is not pinned`,
/// Kubo `not pinned or pinned indirectly`, js-ipfs on pin/rm `... is pinned indirectly under ...`.
fn is_not_pinned(error: &Error) -> bool {
    matches!(error, Error::Ipfs(message) if message.contains("not pinned") || message.contains("pinned indirectly"))
}

/// The daemon's own `timeout=` fired: js-ipfs `request timed out`, Kubo `context deadline exceeded`.
fn is_daemon_timeout(error: &Error) -> bool {
    matches!(error, Error::Ipfs(message) if message.contains("timed out") || message.contains("deadline exceeded"))
}

#[async_trait]
impl IpfsConnector for KuboClient {
    async fn id(&self) -> Result<IpfsId> {
        let response: IdResponse = self.short("id", self.call_json("id", &[])).await?;
        let id = response
            .id
            .parse::<PeerId>()
            .map_err(|e| Error::Ipfs(format!("id answered an invalid peer ID {:?}: {e}", response.id)))?;
        let addresses = response.addresses.unwrap_or_default();
        let addresses = addresses.iter().filter_map(|a| a.parse::<Multiaddr>().ok()).collect();
        Ok(IpfsId { id: Some(id), addresses, error: String::new() })
    }

    async fn pin(&self, cid: &Cid, mode: PinMode, origins: &[Multiaddr]) -> Result<()> {
        self.connect_origins(origins).await;
        let deadline = self.config.pin_deadline;
        let (arg, daemon_timeout) = (cid.to_string(), format!("{}ms", deadline.as_millis()));
        let query = [
            ("arg", arg.as_str()),
            ("recursive", if mode == PinMode::Recursive { "true" } else { "false" }),
            ("progress", "true"),
            ("timeout", daemon_timeout.as_str()),
        ];
        let started = Instant::now();
        let outcome = tokio::time::timeout(deadline, self.follow_pin_add(cid, &query)).await;
        match outcome {
            Ok(Ok(())) => {
                tracing::debug!(%cid, ?mode, elapsed = ?started.elapsed(), "pinned");
                Ok(())
            }
            // Both deadlines are the same: whichever side noticed first, the pin timed out.
            Err(_) => Err(Error::Timeout(format!(
                "pin of {cid} did not complete within pin_deadline ({})",
                format_go_duration(deadline)
            ))),
            Ok(Err(error)) if is_daemon_timeout(&error) => Err(Error::Timeout(format!(
                "pin of {cid} did not complete within pin_deadline ({}): {error}",
                format_go_duration(deadline)
            ))),
            // A direct pin asks only for the root block, which a recursive pin already keeps.
            Ok(Err(Error::Ipfs(message)))
                if mode == PinMode::Direct && message.contains("already pinned recursively") =>
            {
                Ok(())
            }
            Ok(Err(error)) => Err(error),
        }
    }

    async fn unpin(&self, cid: &Cid) -> Result<()> {
        let arg = cid.to_string();
        let call = async {
            let response = self.rpc.call("pin/rm", &[("arg", &arg)]).await?;
            read_to_end(response.into_body(), IPFS_DAEMON).await.map(drop)
        };
        match within(self.config.unpin_timeout, "pin/rm", call).await {
            Err(error) if is_not_pinned(&error) => {
                tracing::debug!(%cid, %error, "unpin: already not pinned");
                Ok(())
            }
            other => other,
        }
    }

    async fn pin_status(&self, cid: &Cid) -> Result<Option<PinMode>> {
        let (arg, wanted) = (cid.to_string(), CidKey::of(cid));
        for mode in [PinMode::Recursive, PinMode::Direct] {
            let query = [("arg", arg.as_str()), ("type", mode.as_str())];
            let listed = self.short("pin/ls", self.call_json::<PinLsLine>("pin/ls", &query)).await;
            match listed {
                Ok(line) => {
                    let mut pins = HashMap::new();
                    collect_pins(line, mode, &mut pins)?;
                    if let Some(found) = pins.get(&wanted) {
                        return Ok(Some(*found));
                    }
                }
                Err(error) if is_not_pinned(&error) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    async fn pin_ls(&self) -> Result<HashMap<CidKey, PinMode>> {
        let mut pins = HashMap::new();
        // Recursive first: should a CID show up in both lists, the stronger pin is reported.
        self.list_pins(PinMode::Recursive, &mut pins).await?;
        self.list_pins(PinMode::Direct, &mut pins).await?;
        Ok(pins)
    }

    /// A failed dial is an error status (Kubo `connect <id> failure: ...`, js-ipfs `All promises were
    /// rejected`); success is `{"Strings":["connect <id> success"]}`, which is checked too.
    async fn swarm_connect(&self, address: &Multiaddr) -> Result<()> {
        let arg = address.to_string();
        let answer: SwarmConnectResponse =
            self.short("swarm/connect", self.call_json("swarm/connect", &[("arg", &arg)])).await?;
        answer.check()
    }

    async fn swarm_peers(&self) -> Result<Vec<PeerId>> {
        let answer: SwarmPeersResponse = self.short("swarm/peers", self.call_json("swarm/peers", &[])).await?;
        answer.peer_ids()
    }

    async fn repo_stat(&self) -> Result<RepoStat> {
        // `size-only` skips counting objects in Kubo; js-ipfs ignores it.
        let stat: RepoStatResponse =
            self.short("repo/stat", self.call_json("repo/stat", &[("size-only", "true")])).await?;
        Ok(RepoStat { repo_size: stat.repo_size, storage_max: stat.storage_max })
    }

    async fn resolve(&self, path: &str) -> Result<Cid> {
        let resolved: ResolveResponse = self.short("resolve", self.call_json("resolve", &[("arg", path)])).await?;
        resolved.cid()
    }

    /// Progress lines (no `Hash` yet) are not yielded: an [`AddedEntry`] always names content. The
    /// whole import, upload included, is bounded by `pin_deadline`.
    async fn add(&self, request: AddRequest) -> Result<BoxStream<'static, Result<AddedEntry>>> {
        let AddRequest { content_type, body, params } = request;
        let deadline = Instant::now() + self.config.pin_deadline;
        let limit = format_go_duration(self.config.pin_deadline);
        let timed_out = move || Error::Timeout(format!("add did not complete within pin_deadline ({limit})"));

        // The cluster decides what is pinned (and where): the daemon only imports.
        let mut query: Vec<(&str, &str)> =
            params.iter().filter(|(k, _)| k != "pin").map(|(k, v)| (k.as_str(), v.as_str())).collect();
        query.push(("pin", "false"));
        // Without it the daemon may hold every entry back until the whole upload is read.
        if !params.iter().any(|(k, _)| k == "stream-channels") {
            query.push(("stream-channels", "true"));
        }
        let upload = StreamBody::new(body.map_ok(Frame::data)).boxed_unsync();
        let response =
            tokio::time::timeout_at(deadline, self.rpc.call_with_body("add", &query, Some(&content_type), upload))
                .await
                .map_err(|_| timed_out())??;

        let lines = NdjsonReader::new(response.into_body(), IPFS_DAEMON);
        let entries = stream::try_unfold(lines, move |mut lines| {
            let timed_out = timed_out.clone();
            async move {
                loop {
                    let next = tokio::time::timeout_at(deadline, lines.next::<AddLine>()).await;
                    match next.map_err(|_| timed_out())?? {
                        None => return Ok(None),
                        Some(line) => {
                            if let Some(entry) = line.into_entry()? {
                                return Ok(Some((entry, lines)));
                            }
                        }
                    }
                }
            }
        });
        Ok(entries.boxed())
    }

    async fn dag_import(&self, archive: ByteStream) -> Result<()> {
        const BOUNDARY: &str = "sidecar-car-upload";
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload.car\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{BOUNDARY}--\r\n");
        let body = stream::once(future::ready(Ok(Bytes::from(head))))
            .chain(archive)
            .chain(stream::once(future::ready(Ok(Bytes::from(tail)))));
        let upload = StreamBody::new(body.map_ok(Frame::data)).boxed_unsync();
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        // The cluster decides what is pinned (and where): the daemon only imports.
        let import = async {
            let query = [("pin-roots", "false")];
            let response = self.rpc.call_with_body("dag/import", &query, Some(&content_type), upload).await?;
            // Nothing to read with pin-roots=false, but a failure comes in the trailer.
            let mut lines = NdjsonReader::new(response.into_body(), IPFS_DAEMON);
            while lines.next::<serde_json::Value>().await?.is_some() {}
            Ok(())
        };
        within(self.config.pin_deadline, "dag/import", import).await
    }

    async fn repo_gc(&self) -> Result<Vec<GcKey>> {
        within(self.config.repogc_timeout, "repo/gc", async {
            let response = self.rpc.call("repo/gc", &[("stream-errors", "true")]).await?;
            let mut lines = NdjsonReader::new(response.into_body(), IPFS_DAEMON);
            let mut keys = Vec::new();
            while let Some(line) = lines.next::<GcLine>().await? {
                keys.push(line.into_key()?);
            }
            Ok(keys)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::ndjson::fixtures::body_of;

    const CHUNKED_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                Trailer: X-Stream-Error\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn chunk(data: &str) -> String {
        format!("{:x}\r\n{data}\r\n", data.len())
    }

    /// A loopback HTTP server that answers every request with `parts`, one every `interval`, and
    /// then keeps the connection open without another byte: a daemon that stalls after what it said.
    async fn scripted_daemon(parts: Vec<String>, interval: Duration) -> KuboClient {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let parts = parts.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap() == 1 {
                        head.push(byte[0]);
                    }
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(interval).await;
                        }
                        socket.write_all(part.as_bytes()).await.unwrap();
                    }
                    std::future::pending::<()>().await;
                });
            }
        });
        let config = KuboConfig {
            node_multiaddress: format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(),
            pin_timeout: Duration::from_millis(300),
            pin_deadline: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(2),
            ..KuboConfig::default()
        };
        KuboClient::new(config).unwrap()
    }

    fn raw_cid() -> Cid {
        Cid::new_v1(0x55, multihash::Multihash::<64>::wrap(0x12, &[7u8; 32]).unwrap())
    }

    /// The trailer is read by the real HTTP client, not only by the body parser.
    #[tokio::test]
    async fn stream_error_trailer_over_http_fails_the_listing() {
        let cid = raw_cid();
        let response = format!(
            "{CHUNKED_HEAD}{}0\r\nX-Stream-Error: {{\"Message\":\"listing broke\",\"Code\":0}}\r\n\r\n",
            chunk(&format!("{{\"Cid\":\"{cid}\",\"Type\":\"recursive\"}}\n"))
        );
        let client = scripted_daemon(vec![response], Duration::ZERO).await;
        let err = client.pin_ls().await.unwrap_err();
        assert!(matches!(&err, Error::Ipfs(m) if m == "listing broke"), "{err:?}");
    }

    #[tokio::test]
    async fn pin_fails_when_progress_stops_growing() {
        // Kubo repeats an unchanged count about every second while nothing arrives.
        let mut parts = vec![CHUNKED_HEAD.to_string(), chunk("{\"Progress\":1}\n"), chunk("{\"Progress\":2}\n")];
        parts.extend(std::iter::repeat_n(chunk("{\"Progress\":2}\n"), 20));
        let client = scripted_daemon(parts, Duration::from_millis(100)).await;
        let started = StdInstant::now();
        let err = client.pin(&raw_cid(), PinMode::Recursive, &[]).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(&err, Error::Timeout(m) if m.contains("no progress for 300ms")), "{err:?}");
        // Progress 2 arrives at about 200 ms, so the stall is declared at about 500 ms.
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500), "the stall, not the deadline: {elapsed:?}");
    }

    #[tokio::test]
    async fn pin_without_progress_ends_at_the_deadline() {
        let client = scripted_daemon(vec![CHUNKED_HEAD.to_string()], Duration::ZERO).await;
        let started = StdInstant::now();
        let err = client.pin(&raw_cid(), PinMode::Direct, &[]).await.unwrap_err();
        assert!(matches!(&err, Error::Timeout(m) if m.contains("pin_deadline (1.5s)")), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn pin_confirmation_compares_cids_by_content() {
        let cid = raw_cid();
        let v1_base58 = cid.to_string_of_base(cid::multibase::Base::Base58Btc).unwrap();
        let line = format!("{{\"Pins\":[\"{v1_base58}\"]}}\n");
        let client = scripted_daemon(vec![format!("{CHUNKED_HEAD}{}0\r\n\r\n", chunk(&line))], Duration::ZERO).await;
        client.pin(&cid, PinMode::Recursive, &[]).await.unwrap();
    }

    #[test]
    fn not_pinned_and_daemon_timeout_messages() {
        for message in [
            "Failed to remove pin: bafy is not pinned",
            "path 'bafy' is not pinned",
            "not pinned or pinned indirectly",
            "Failed to remove pin: bafk is pinned indirectly under QmX",
        ] {
            assert!(is_not_pinned(&Error::Ipfs(message.into())), "{message}");
        }
        assert!(!is_not_pinned(&Error::Ipfs("merkledag: not found".into())));
        assert!(!is_not_pinned(&Error::IpfsUnreachable("not pinned".into())));
        assert!(is_daemon_timeout(&Error::Ipfs("Failed to add pin: request timed out".into())));
        assert!(is_daemon_timeout(&Error::Ipfs("context deadline exceeded".into())));
    }

    /// One million streamed pins are read line by line, not as one buffered string.
    #[tokio::test]
    async fn pin_ls_copes_with_a_million_lines() {
        const COUNT: usize = 1_000_000;
        let cids: Vec<String> = (0..COUNT as u64)
            .map(|i| {
                let mut digest = [0u8; 32];
                digest[..8].copy_from_slice(&i.to_be_bytes());
                let hash = multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
                Cid::new_v1(0x55, hash).to_string()
            })
            .collect();
        // 4 KiB frames, so lines straddle frame boundaries as they do on the wire.
        let text: String = cids.iter().map(|c| format!("{{\"Cid\":\"{c}\",\"Type\":\"recursive\"}}\n")).collect();
        let chunks: Vec<&'static str> = {
            let leaked: &'static str = Box::leak(text.into_boxed_str());
            leaked.as_bytes().chunks(4096).map(|c| std::str::from_utf8(c).unwrap()).collect()
        };
        let started = StdInstant::now();
        let mut lines = NdjsonReader::new(body_of(chunks, None), IPFS_DAEMON);
        let mut pins = HashMap::new();
        while let Some(line) = lines.next::<PinLsLine>().await.unwrap() {
            collect_pins(line, PinMode::Recursive, &mut pins).unwrap();
        }
        assert_eq!(pins.len(), COUNT);
        assert_eq!(pins.get(&CidKey::of(&Cid::try_from(cids[COUNT - 1].as_str()).unwrap())), Some(&PinMode::Recursive));
        assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    }

    #[test]
    fn collect_pins_skips_indirect_and_defaults_to_asked_type() {
        let v0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";
        let line: PinLsLine =
            decode_line(format!(r#"{{"Keys":{{"{v0}":{{"Type":"indirect through QmX"}}}}}}"#).as_bytes(), IPFS_DAEMON)
                .unwrap();
        let mut pins = HashMap::new();
        collect_pins(line, PinMode::Recursive, &mut pins).unwrap();
        assert!(pins.is_empty());
        let line: PinLsLine = decode_line(format!(r#"{{"Cid":"{v0}"}}"#).as_bytes(), IPFS_DAEMON).unwrap();
        collect_pins(line, PinMode::Direct, &mut pins).unwrap();
        assert_eq!(pins.values().collect::<Vec<_>>(), vec![&PinMode::Direct]);
    }
}
