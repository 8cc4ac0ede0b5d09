//! The README's first steps, as a new user takes them: `scripts/run` with authentication on, then
//! every command it prints, copied as they are.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::*;

/// `scripts/run` in its own process group, stopped (with its daemons and peers) when dropped.
struct MainJob(Child);

impl Drop for MainJob {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            // SAFETY: kill(2) of the process group our own child leads (`process_group(0)`).
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGTERM) };
        }
    }
}

/// What `cargo test` sets for the test process, which a nested `cargo build` must not see: build
/// scripts (ring's) watch some of them, so the build would redo the binaries the other tests run.
fn is_cargo_test_variable(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&name)
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the repository")
}

/// Starts the main job and returns it with the commands it printed once ready.
async fn start_main_job(run_dir: &Path, args: &[&str]) -> (MainJob, Vec<String>) {
    let mut command = Command::new(repo_root().join("scripts/run"));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_cargo_test_variable) {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .current_dir(repo_root())
        .env("RUN_DIR", run_dir)
        .env("PEERS", "1")
        .env("API_PORT", free_port().to_string())
        .env("CLUSTER_PORT", free_port().to_string())
        .env("IPFS_API_PORT", free_port().to_string())
        .env("IPFS_SWARM_PORT", free_port().to_string())
        .env_remove("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().expect("scripts/run starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let job = MainJob(child);

    let mut printed = Vec::new();
    let ready = async {
        while let Some(line) = stderr.next_line().await.expect("reading scripts/run's output") {
            printed.push(line.clone());
            if line.starts_with("Ctrl-C") {
                return true;
            }
        }
        false
    };
    let ready = tokio::time::timeout(4 * WAIT, ready).await;
    assert!(matches!(ready, Ok(true)), "scripts/run did not get ready:\n{}", printed.join("\n"));
    let hints = printed
        .iter()
        .skip_while(|l| !l.starts_with("Ready:"))
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_string)
        .collect();
    (job, hints)
}

async fn shell(command: &str) -> (bool, String) {
    let output =
        tokio::time::timeout(WAIT, Command::new("bash").arg("-c").arg(command).current_dir(repo_root()).output())
            .await
            .unwrap_or_else(|_| panic!("{command} still running after {WAIT:?}"))
            .expect("running bash");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test]
async fn the_printed_commands_work_with_authentication_on() {
    let run_dir = tempfile::tempdir().unwrap();
    let (_job, hints) = start_main_job(run_dir.path(), &["--basic-auth", "admin:pw"]).await;
    assert!(hints.len() >= 5, "{hints:?}");

    let add = hints.iter().find(|h| h.contains("/add")).expect("a hint adds content");
    let (ok, added) = shell(add).await;
    assert!(ok, "{add}: {added}");
    let added: serde_json::Value = serde_json::from_str(added.trim()).unwrap_or_else(|e| panic!("{e}: {added}"));
    let cid = added["cid"].as_str().expect("the added CID");

    for hint in hints.iter().filter(|h| *h != add) {
        let command = hint.replace("<cid>", cid);
        let (ok, output) = shell(&command).await;
        assert!(ok, "{command} failed: {output}");
        assert!(!output.contains("\"code\":401"), "{command}: {output}");
    }
}
