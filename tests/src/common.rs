//! Helpers shared by the end-to-end tests: a peer process with its own temporary data directory
//! and a raw HTTP view of its REST API, content the daemons do not have yet, and condition polling.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ipfs_daemon::IpfsDaemon;
use crate::peer::{unique_loopback, PeerOptions, PeerProcess, TEST_SECRET};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sidecar::types::{parse_cid, Cid, CidKey};

/// How long any condition may take to come true on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// The IPFS daemon the tests of this binary share (tests that kill or restart one start their own).
pub fn shared_daemon() -> &'static IpfsDaemon {
    IpfsDaemon::shared().expect("shared IPFS daemon")
}

/// A daemon of the test's own in `dir`, on the given ports (0 = any free port).
pub async fn own_daemon(dir: &Path, api_port: u16, swarm_port: u16) -> IpfsDaemon {
    let repo = dir.join("ipfs-repo");
    tokio::task::spawn_blocking(move || IpfsDaemon::start_on_ports(&repo, api_port, swarm_port))
        .await
        .expect("daemon start task")
        .expect("own IPFS daemon")
}

/// Content no other test (and no earlier run) has added.
pub fn unique_bytes(label: &str) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{label} #{} at {now} in {}", COUNTER.fetch_add(1, Ordering::Relaxed), std::process::id()).into_bytes()
}

/// The CID `block/put?format=raw` gives `data`: CIDv1, raw codec, sha2-256 (`bafkrei...`).
pub fn raw_cid(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    Cid::new_v1(0x55, hash).to_string()
}

/// Puts `data` into the daemon as one raw block, as content arriving late; checks its CID.
pub async fn block_put(daemon: &IpfsDaemon, data: &[u8]) {
    let part =
        reqwest::multipart::Part::bytes(data.to_vec()).file_name("block").mime_str("application/octet-stream").unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let url = format!("{}/api/v0/block/put", daemon.api_url());
    let response = reqwest::Client::new()
        .post(&url)
        .query(&[("format", "raw"), ("mhtype", "sha2-256")])
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "block/put: {status}: {text}");
    let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("block/put answered {text}: {e}"));
    let key = answer["Key"].as_str().unwrap_or_else(|| panic!("block/put answered {text}"));
    assert!(same_cid(key, &raw_cid(data)), "block/put made {key}, expected {}", raw_cid(data));
}

/// Adds `data` to the daemon, unpinned (tests decide what gets pinned); returns its CID.
pub async fn add_unpinned(daemon: &IpfsDaemon, label: &str) -> String {
    daemon.add_bytes(&unique_bytes(label)).await.expect("add to the daemon")
}

pub fn key(cid: &str) -> CidKey {
    CidKey::of(&parse_cid(cid).unwrap_or_else(|e| panic!("{cid}: {e:?}")))
}

/// CIDs compare by multihash and codec, never as strings (versions and bases differ).
pub fn same_cid(a: &str, b: &str) -> bool {
    key(a) == key(b)
}

/// Whether the daemon itself (its own `pin/ls`) holds `cid` as a recursive or direct pin.
pub async fn daemon_has_pin(daemon: &IpfsDaemon, cid: &str) -> bool {
    daemon.pin_ls().await.expect("daemon pin/ls").contains_key(&key(cid))
}

/// Waits until the daemon's `pin/ls` lists `cid` (`true`) or no longer does (`false`).
pub async fn wait_daemon_pin(daemon: &IpfsDaemon, cid: &str, pinned: bool) {
    let what = format!("{cid} {} in the daemon's pin/ls", if pinned { "pinned" } else { "not pinned" });
    wait_for(&what, WAIT, || async {
        match daemon.pin_ls().await {
            Ok(pins) if pins.contains_key(&key(cid)) == pinned => Ok(()),
            Ok(pins) => Err(format!("{} pins listed, {cid} {}", pins.len(), if pinned { "absent" } else { "present" })),
            Err(e) => Err(format!("pin/ls failed: {e:#}")),
        }
    })
    .await
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Polls `probe` until it returns `Ok`; `Err` carries the last state seen, shown on timeout.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One peer process with its own data directory, reached over raw HTTP.
pub struct TestPeer {
    pub process: PeerProcess,
    pub http: reqwest::Client,
    /// Sent as Basic auth with every request when set.
    pub credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl TestPeer {
    /// Starts a peer beside the daemon at `ipfs_api` (a multiaddr) with further flags.
    pub async fn start(ipfs_api: &str, args: &[&str]) -> TestPeer {
        Self::start_with_service(ipfs_api, args, None).await
    }

    /// As [`TestPeer::start`], with a `service.json` written to the data directory first.
    pub async fn start_with_service(ipfs_api: &str, args: &[&str], service: Option<Value>) -> TestPeer {
        let dir = tempfile::Builder::new().prefix("e2e-peer-").tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        if let Some(service) = service {
            std::fs::write(data_dir.join("service.json"), serde_json::to_vec_pretty(&service).unwrap()).unwrap();
        }
        let options = PeerOptions {
            data_dir,
            host: unique_loopback(),
            ipfs_api: ipfs_api.to_string(),
            secret: Some(TEST_SECRET.to_string()),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        let process = PeerProcess::start(options).await.expect("peer start");
        TestPeer { process, http: http_client(), credentials: None, dir }
    }

    /// A directory of the test's own beside the peer's data (e.g. for its own IPFS daemon).
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> &Path {
        &self.process.options.data_dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.api_url())
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.credentials {
            Some((user, password)) => builder.basic_auth(user, Some(password)),
            None => builder,
        }
    }

    /// Sends and returns the status code and the body as JSON (`Null` when empty).
    pub async fn call(&self, builder: RequestBuilder) -> (u16, Value) {
        let request = builder.build().unwrap();
        let what = format!("{} {}", request.method(), request.url());
        let response = self.http.execute(request).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what} answered {status} with non-JSON {text:?}: {e}"))
        };
        (status, body)
    }

    /// `POST /pins/{target}` (a CID or `ipfs/<cid>/<path>`), which must be acknowledged (200).
    pub async fn pin(&self, target: &str, query: &[(&str, &str)]) -> Value {
        let (status, body) = self.call(self.request(Method::POST, &format!("/pins/{target}")).query(query)).await;
        assert_eq!(status, 200, "POST /pins/{target}: {body}");
        body
    }

    /// `DELETE /pins/{target}`: status and body.
    pub async fn unpin(&self, target: &str) -> (u16, Value) {
        self.call(self.request(Method::DELETE, &format!("/pins/{target}"))).await
    }

    /// `GET /pins/{cid}`: the `GlobalPinInfo`.
    pub async fn status(&self, cid: &str) -> Value {
        let (status, body) = self.call(self.request(Method::GET, &format!("/pins/{cid}"))).await;
        assert_eq!(status, 200, "GET /pins/{cid}: {body}");
        body
    }

    /// Waits until this peer's status of `cid` is one of `wanted`; returns the `GlobalPinInfo`.
    pub async fn wait_status(&self, cid: &str, wanted: &[&str]) -> Value {
        let what = format!("{cid} to be {} on {}", wanted.join(" or "), self.process.api_url());
        let info = wait_for(&what, WAIT, || async {
            let info = self.status(cid).await;
            match local_status(&info) {
                (status, _) if wanted.contains(&status.as_str()) => Ok(info),
                _ => Err(info.to_string()),
            }
        })
        .await;
        info
    }

    /// `GET /allocations` (NDJSON): the pins of the pinset.
    pub async fn allocations(&self) -> Vec<Value> {
        let response = self.request(Method::GET, "/allocations").send().await.expect("GET /allocations");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        match status {
            204 => Vec::new(),
            200 => text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect(),
            _ => panic!("GET /allocations: {status}: {text}"),
        }
    }

    /// The value of a Prometheus sample of `GET /metrics` (counters with or without `_total`).
    pub async fn prometheus(&self, name: &str) -> Option<f64> {
        let text = self.request(Method::GET, "/metrics").send().await.ok()?.text().await.ok()?;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
            let (metric, value) = line.rsplit_once(' ')?;
            (metric == name || metric == format!("{name}_total")).then(|| value.parse().ok())?
        })
    }

    /// SIGTERM and wait: the peer must shut down cleanly.
    pub async fn stop(&mut self) {
        let code = self.process.stop(Duration::from_secs(30)).await.expect("stopping the peer");
        assert_eq!(code, Some(0), "the peer did not exit cleanly on SIGTERM; log:\n{}", self.log_tail());
    }

    /// The end of the peer's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.process.log();
        let cut = log.len().saturating_sub(6000);
        let cut = (cut..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
        log[cut..].to_string()
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// `(status, error)` of the one peer in a `GlobalPinInfo`'s `peer_map`.
pub fn local_status(info: &Value) -> (String, String) {
    let peers = info["peer_map"].as_object().unwrap_or_else(|| panic!("no peer_map in {info}"));
    assert_eq!(peers.len(), 1, "a single peer's status: {info}");
    let entry = peers.values().next().unwrap();
    (entry["status"].as_str().unwrap_or_default().to_string(), entry["error"].as_str().unwrap_or_default().to_string())
}

/// The `service.json` of a peer whose failed pins stay failed quickly: one retry, short backoff.
pub fn fast_failing_tracker() -> Value {
    serde_json::json!({
        "pin_tracker": {
            "stateless": {
                "max_retries": 1,
                "retry_backoff_base": "100ms",
                "retry_backoff_cap": "200ms"
            }
        }
    })
}
