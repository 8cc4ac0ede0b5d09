//! `cluster-ctl` against a running peer, as an operator would use it.

use std::process::Stdio;

use e2e::peer::workspace_binary;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::common::*;

/// What one `cluster-ctl` run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self, what: &str) -> Run {
        assert_eq!(self.code, Some(0), "cluster-ctl {what} failed:\n{}{}", self.stdout, self.stderr);
        self
    }
}

fn ctl_command(peer: &TestPeer, args: &[&str]) -> tokio::process::Command {
    ctl_command_at(&peer.process.api_multiaddr().to_string(), args)
}

fn ctl_command_at(host: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(workspace_binary("cluster-ctl").unwrap());
    command
        .arg("--host")
        .arg(host)
        .args(args)
        .env_remove("CLUSTER_HOST")
        .env_remove("CLUSTER_CREDENTIALS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn ctl(peer: &TestPeer, args: &[&str]) -> Run {
    ctl_at(&peer.process.api_multiaddr().to_string(), args).await
}

async fn ctl_at(host: &str, args: &[&str]) -> Run {
    let output = tokio::time::timeout(WAIT, ctl_command_at(host, args).output())
        .await
        .unwrap_or_else(|_| panic!("cluster-ctl {args:?} still running after {WAIT:?}"))
        .expect("running cluster-ctl");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `--enc json` output: one or more JSON values one after the other.
fn json_values(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not JSON: {e}:\n{text}"))
}

#[tokio::test]
async fn cli_drives_a_running_peer() {
    let daemon = shared_daemon();
    let mut peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &[]).await;

    let id = ctl(&peer, &["--enc", "json", "id"]).await.ok("id");
    let id = &json_values(&id.stdout)[0];
    let peer_id = id["id"].as_str().unwrap_or_else(|| panic!("{id}")).to_string();
    let text = ctl(&peer, &["id"]).await.ok("id");
    assert!(text.stdout.contains(&peer_id), "{}", text.stdout);

    // `pin add --wait` of content that arrives while it waits: progress, then pinned.
    let content = unique_bytes("pinned through the CLI");
    let cid = raw_cid(&content);
    let mut child = ctl_command(&peer, &["pin", "add", "--wait", "--name", "cli-pin", &cid]).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    // The pin cannot complete before the content exists: the first status poll shows progress.
    let progress = tokio::time::timeout(WAIT, async {
        loop {
            match stderr.next_line().await.expect("reading cluster-ctl's stderr") {
                Some(line) if line.contains(&cid) => return line,
                Some(_) => {}
                None => panic!("cluster-ctl closed stderr before showing progress"),
            }
        }
    })
    .await
    .expect("a progress line of pin add --wait");
    block_put(daemon, &content).await;
    let status = tokio::time::timeout(WAIT, child.wait()).await.expect("pin add --wait ends").unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).await.unwrap();
    assert!(status.success(), "pin add --wait: {status}; stdout:\n{stdout}");
    assert!(stdout.contains(&cid) && stdout.contains(": PINNED"), "ends pinned:\n{stdout}\nprogress: {progress:?}");
    assert!(daemon_has_pin(daemon, &cid).await);

    let listed = ctl(&peer, &["pin", "ls"]).await.ok("pin ls");
    assert!(listed.stdout.contains(&cid) && listed.stdout.contains("cli-pin"), "{}", listed.stdout);
    let listed = ctl(&peer, &["--enc", "json", "pin", "ls"]).await.ok("pin ls");
    assert!(json_values(&listed.stdout).iter().any(|p| p["cid"] == cid.as_str()), "{}", listed.stdout);

    let status = ctl(&peer, &["status", &cid]).await.ok("status");
    assert!(status.stdout.contains(": PINNED"), "{}", status.stdout);
    let all = ctl(&peer, &["--enc", "json", "status"]).await.ok("status");
    let infos = json_values(&all.stdout);
    let info = infos.iter().find(|i| i["cid"] == cid.as_str()).unwrap_or_else(|| panic!("{}", all.stdout));
    assert_eq!(local_status(info).0, "pinned");

    let recovered = ctl(&peer, &["recover", &cid]).await.ok("recover");
    assert!(recovered.stdout.contains(&cid), "{}", recovered.stdout);
    let recovered = ctl(&peer, &["--enc", "json", "recover"]).await.ok("recover");
    json_values(&recovered.stdout);

    let graph = ctl(&peer, &["health", "graph"]).await.ok("health graph");
    assert!(graph.stdout.contains("digraph") || graph.stdout.contains(&peer_id), "{}", graph.stdout);
    let graph = ctl(&peer, &["--enc", "json", "health", "graph"]).await.ok("health graph");
    assert_eq!(json_values(&graph.stdout)[0]["cluster_id"], peer_id.as_str(), "{}", graph.stdout);
    let names = ctl(&peer, &["--enc", "json", "health", "metrics"]).await.ok("health metrics");
    let names = json_values(&names.stdout);
    let first = names[0].as_array().and_then(|n| n.first()).and_then(Value::as_str);
    if let Some(name) = first {
        let metrics = ctl(&peer, &["--enc", "json", "health", "metrics", name]).await.ok("health metrics <name>");
        assert!(json_values(&metrics.stdout)[0].is_array(), "{}", metrics.stdout);
        ctl(&peer, &["health", "metrics", name]).await.ok("health metrics <name>");
    }
    ctl(&peer, &["health", "metrics"]).await.ok("health metrics");
    ctl(&peer, &["health", "alerts"]).await.ok("health alerts");
    let bandwidth = ctl(&peer, &["--enc", "json", "health", "bandwidth"]).await.ok("health bandwidth");
    assert!(json_values(&bandwidth.stdout)[0].is_object(), "{}", bandwidth.stdout);
    ctl(&peer, &["health", "bandwidth"]).await.ok("health bandwidth");
    let alerts = ctl(&peer, &["--enc", "json", "health", "alerts"]).await.ok("health alerts");
    assert!(json_values(&alerts.stdout)[0].is_array(), "{}", alerts.stdout);

    let removed = ctl(&peer, &["pin", "rm", "--wait", &cid]).await.ok("pin rm");
    assert!(removed.stdout.contains("UNPINNED"), "{}", removed.stdout);
    wait_daemon_pin(daemon, &cid, false).await;
    // An API error: on stdout, exit 2, as `ipfs-cluster-ctl` (scripts read both).
    let again = ctl(&peer, &["pin", "rm", &cid]).await;
    assert_eq!(again.code, Some(2), "removing an absent pin is an API error: {}{}", again.stdout, again.stderr);
    assert!(again.stdout.starts_with("An error occurred:\n  Code: 404\n  Message: "), "{}", again.stdout);
    assert!(again.stderr.is_empty(), "{}", again.stderr);
    let again = ctl(&peer, &["--enc", "json", "pin", "rm", &cid]).await;
    assert_eq!(again.code, Some(2));
    let error = &json_values(&again.stdout)[0];
    assert_eq!(error["code"], 404, "{}", again.stdout);
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", again.stdout);
    peer.stop().await;
}

#[tokio::test]
async fn cli_reports_bad_input_and_bad_credentials() {
    let daemon = shared_daemon();
    let mut peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &["--basic-auth", "admin:secret"]).await;

    // Local errors: stderr, exit 1, nothing sent.
    let invalid = ctl(&peer, &["--basic-auth", "admin:secret", "pin", "add", "not-a-cid"]).await;
    assert_eq!(invalid.code, Some(1), "{}{}", invalid.stdout, invalid.stderr);
    assert!(invalid.stderr.starts_with("error parsing cid: "), "{}", invalid.stderr);
    assert!(invalid.stdout.is_empty(), "{}", invalid.stdout);
    let usage = ctl(&peer, &["pin", "add"]).await;
    assert_eq!(usage.code, Some(1), "a usage error: {}", usage.stderr);

    // API errors: stdout, exit 2.
    let wrong = ctl(&peer, &["--basic-auth", "admin:wrong", "id"]).await;
    assert_eq!(wrong.code, Some(2), "{}{}", wrong.stdout, wrong.stderr);
    assert!(wrong.stdout.starts_with("An error occurred:\n  Code: 401\n"), "a clear message: {}", wrong.stdout);
    let none = ctl(&peer, &["--enc", "json", "status"]).await;
    assert_eq!(none.code, Some(2), "{}{}", none.stdout, none.stderr);
    assert_eq!(json_values(&none.stdout)[0]["code"], 401, "{}", none.stdout);

    // Nobody listening: the error object with code 0, exit 1.
    let nobody = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let down = ctl_at(&nobody, &["id"]).await;
    assert_eq!(down.code, Some(1), "{}{}", down.stdout, down.stderr);
    assert!(down.stdout.starts_with("An error occurred:\n  Code: 0\n"), "{}", down.stdout);

    let right = ctl(&peer, &["--basic-auth", "admin:secret", "id"]).await.ok("id with credentials");
    assert!(!right.stdout.is_empty());
    peer.stop().await;
}

#[tokio::test]
async fn cli_adds_files_updates_pins_and_collects_garbage() {
    let daemon = shared_daemon();
    let mut peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("css")).unwrap();
    std::fs::write(site.join("index.html"), unique_bytes("index")).unwrap();
    std::fs::write(site.join("css/style.css"), unique_bytes("style")).unwrap();
    let site_arg = site.to_string_lossy().into_owned();

    // Each entry as `added <cid> <path>`; the root (the directory) comes last and is pinned.
    let added = ctl(&peer, &["add", "-r", "--name", "site", &site_arg]).await.ok("add -r");
    let lines: Vec<&str> = added.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", added.stdout);
    assert!(lines.iter().all(|l| l.starts_with("added ")), "{}", added.stdout);
    let root = lines[3].split(' ').nth(1).unwrap().to_string();
    assert!(lines[3].ends_with(" site"), "{}", added.stdout);
    wait_daemon_pin(daemon, &root, true).await;
    let pin = peer.status(&root).await;
    assert_eq!(pin["name"], "site", "{pin}");

    // -Q: only the root's CID; --no-pin leaves it unpinned.
    let file = dir.path().join("v2.txt");
    std::fs::write(&file, unique_bytes("version 2")).unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let quieter = ctl(&peer, &["add", "-Q", "--no-pin", "--cid-version", "1", &file_arg]).await.ok("add -Q");
    let next = quieter.stdout.trim().to_string();
    assert!(next.starts_with("bafk"), "cid-version 1 with raw leaves: {}", quieter.stdout);
    assert!(!daemon_has_pin(daemon, &next).await);

    // pin update FROM TO: the new pin, under the new name.
    let updated = ctl(&peer, &["--enc", "json", "pin", "update", &root, &next, "--name", "v2", "--no-status"])
        .await
        .ok("pin update");
    let updated = &json_values(&updated.stdout)[0];
    assert!(same_cid(updated["cid"].as_str().unwrap(), &next) && updated["name"] == "v2", "{updated}");
    wait_daemon_pin(daemon, &next, true).await;

    // --format car: the archive's root.
    let exported = daemon.add_bytes(&unique_bytes("a CAR through the CLI")).await.unwrap();
    let car = dir.path().join("export.car");
    std::fs::write(&car, crate::car::dag_export(daemon, &exported).await).unwrap();
    let car_arg = car.to_string_lossy().into_owned();
    let imported = ctl(&peer, &["add", "--format", "car", "-Q", &car_arg]).await.ok("add --format car");
    assert!(same_cid(imported.stdout.trim(), &exported), "{}", imported.stdout);
    wait_daemon_pin(daemon, &exported, true).await;

    let gc = ctl(&peer, &["--enc", "json", "ipfs", "gc", "--local"]).await.ok("ipfs gc");
    assert!(json_values(&gc.stdout)[0]["peer_map"].is_object(), "{}", gc.stdout);
    ctl(&peer, &["ipfs", "gc"]).await.ok("ipfs gc");

    // A directory without -r, or a missing file, is a local error.
    let no_r = ctl(&peer, &["add", &site_arg]).await;
    assert_eq!(no_r.code, Some(1), "{}", no_r.stderr);
    assert!(no_r.stderr.contains("-r"), "{}", no_r.stderr);
    peer.stop().await;
}

/// The preStop hook of a peer pod: `peers await-departure` ends when a restart is declared, runs
/// out of time with code 62 when nothing is decided, and ends at once when the peer is gone.
#[tokio::test]
async fn cli_awaits_a_departure() {
    let daemon = shared_daemon();
    let mut peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &[]).await;

    let undecided = ctl(&peer, &["peers", "await-departure", "--wait-timeout", "1s"]).await;
    assert_eq!(undecided.code, Some(62), "{}{}", undecided.stdout, undecided.stderr);
    assert!(undecided.stderr.contains("nothing decided within 1s"), "{}", undecided.stderr);

    let waiting = ctl_command(&peer, &["peers", "await-departure", "--wait-timeout", "10m"]).spawn().unwrap();
    let (status, body) = peer
        .call(
            peer.request(reqwest::Method::PUT, "/consensus/departure")
                .json(&serde_json::json!({"departure": "restart"})),
        )
        .await;
    assert_eq!((status, body), (200, serde_json::json!({"departure": "restart"})));
    let output = tokio::time::timeout(WAIT, waiting.wait_with_output()).await.expect("await-departure ends").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && stdout.contains("the pod restarts"), "{}: {stdout}", output.status);

    peer.process.kill9().unwrap();
    let gone = ctl(&peer, &["peers", "await-departure", "--wait-timeout", "10m"]).await.ok("await-departure");
    assert!(gone.stdout.contains("does not answer"), "{}", gone.stdout);
}
