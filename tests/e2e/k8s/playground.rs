//! The playground (`scripts/playground` runs `k8s-playground`): it comes up with its peers joined,
//! the commands it prints work as printed, and Ctrl-C leaves nothing running.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Start-up: a control plane, helm, three peers with their IPFS daemons, on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Every process below `root` (children, their children...), from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        next += 1;
    }
    found.split_off(1)
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Runs a printed command line (words split on spaces, `$KUBECONFIG` set as printed).
fn run_printed(line: &str, kubeconfig: &str) -> String {
    let words: Vec<&str> = line.split('#').next().unwrap().split_whitespace().collect();
    let out = Command::new(words[0]).args(&words[1..]).env("KUBECONFIG", kubeconfig).output().unwrap();
    assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_playground_comes_up_and_ctrl_c_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let binary = e2e::peer::workspace_binary("k8s-playground").unwrap();
    let namespace = format!("playground-{}", std::process::id());
    let mut child = Command::new(binary)
        .args(["--dir", dir.path().to_str().unwrap(), "--namespace", &namespace])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("| {line}");
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    // Up to "Ready." and the steps it prints.
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut printed = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = received.recv_timeout(left).expect("the playground printed its next steps in time");
        if line.starts_with("Ctrl-C stops") {
            break;
        }
        printed.push(line);
    }
    let step = |prefix: &str| -> String {
        let found = printed.iter().find(|l| l.trim_start().starts_with(prefix));
        found.unwrap_or_else(|| panic!("no `{prefix}` step in {printed:#?}")).trim().to_string()
    };
    let kubeconfig = step("export KUBECONFIG=").trim_start_matches("export KUBECONFIG=").to_string();
    assert_eq!(kubeconfig, dir.path().join("kubeconfig").to_str().unwrap());

    let table = run_printed(&step("kubectl get clusterpeers"), &kubeconfig);
    let joined = table.lines().filter(|l| l.contains("Joined") && l.contains("Voter")).count();
    assert_eq!(joined, 3, "{table}");
    let peers = run_printed(&step(&e2e::peer::workspace_binary("cluster-ctl").unwrap().display().to_string()), "");
    assert_eq!(peers.lines().filter(|l| l.contains("Sees 2 other peers")).count(), 3, "{peers}");

    // The pin steps, as printed: the example reaches Pinned, and goes when deleted.
    run_printed(&step("kubectl apply"), &kubeconfig);
    run_printed(&format!("{} --timeout=120s", step("kubectl wait")), &kubeconfig);
    let described = run_printed(&step("kubectl describe pin"), &kubeconfig);
    assert!(described.contains("Pinned"), "{described}");
    run_printed(&step("kubectl delete pin"), &kubeconfig);

    // Ctrl-C: everything it started stops, and it says so.
    let started = descendants(child.id());
    assert!(started.len() > 5, "a control plane and pods run below the playground: {started:?}");
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let mut said = Vec::new();
    while let Ok(line) = received.recv_timeout(Duration::from_secs(120)) {
        said.push(line);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {said:?}");
    assert!(said.iter().any(|l| l.ends_with("stopped; nothing left running")), "{said:?}");
    let left: Vec<u32> = started.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "still running after Ctrl-C: {left:?}");
}
