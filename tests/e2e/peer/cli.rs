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
    let mut command = tokio::process::Command::new(workspace_binary("cluster-ctl").unwrap());
    command
        .arg("--host")
        .arg(peer.process.api_multiaddr())
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
    let output = tokio::time::timeout(WAIT, ctl_command(peer, args).output())
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
    let alerts = ctl(&peer, &["--enc", "json", "health", "alerts"]).await.ok("health alerts");
    assert!(json_values(&alerts.stdout)[0].is_array(), "{}", alerts.stdout);

    let removed = ctl(&peer, &["pin", "rm", "--wait", &cid]).await.ok("pin rm");
    assert!(removed.stdout.contains("UNPINNED"), "{}", removed.stdout);
    wait_daemon_pin(daemon, &cid, false).await;
    let again = ctl(&peer, &["pin", "rm", &cid]).await;
    assert_ne!(again.code, Some(0), "removing an absent pin fails");
    assert!(again.stderr.contains("404"), "{}", again.stderr);
    peer.stop().await;
}

#[tokio::test]
async fn cli_reports_bad_input_and_bad_credentials() {
    let daemon = shared_daemon();
    let mut peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &["--basic-auth", "admin:secret"]).await;

    let invalid = ctl(&peer, &["--basic-auth", "admin:secret", "pin", "add", "not-a-cid"]).await;
    assert!(invalid.code.is_some_and(|c| c != 0), "exit code {:?}", invalid.code);
    assert!(invalid.stderr.to_lowercase().contains("cid") && invalid.stderr.contains("400"), "{}", invalid.stderr);

    let wrong = ctl(&peer, &["--basic-auth", "admin:wrong", "id"]).await;
    assert!(wrong.code.is_some_and(|c| c != 0), "exit code {:?}", wrong.code);
    assert!(wrong.stderr.contains("401"), "a clear message: {}", wrong.stderr);
    let none = ctl(&peer, &["status"]).await;
    assert!(none.code.is_some_and(|c| c != 0) && none.stderr.contains("401"), "{}", none.stderr);

    let right = ctl(&peer, &["--basic-auth", "admin:secret", "id"]).await.ok("id with credentials");
    assert!(!right.stdout.is_empty());
    peer.stop().await;
}
