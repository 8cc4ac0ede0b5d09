//! A cluster of real peer processes, each on its own loopback address, each beside its own IPFS
//! daemon (or all beside one shared daemon, for tests that pin nothing).
//!
//! The first peer starts a new cluster; the others join it with `--bootstrap`, as a person would
//! start them. Every wait polls the peers' REST API (`GET /consensus`, ours) under a generous
//! deadline.

use reqwest::Method;
use serde_json::Value;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::common::{wait_for, TestPeer, WAIT};
use crate::ipfs_daemon::IpfsDaemon;

/// Clusters running at once in one test binary: each peer brings an IPFS daemon of ~150 MB and a
/// share of two cores; more at once makes elections flap on a loaded machine.
static RUNNING: Semaphore = Semaphore::const_new(2);

/// Where the peers' IPFS daemons come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Daemons {
    /// One daemon per peer: needed to check where pins land.
    Own,
    /// Every peer beside the binary's shared daemon: for membership tests that pin nothing.
    Shared,
}

/// One member: its process, its daemon (when it has its own) and its libp2p identity.
pub struct Member {
    pub peer: TestPeer,
    pub daemon: Option<IpfsDaemon>,
    pub peer_id: String,
    /// The daemon's repository; declared last so it is removed after the daemon stopped.
    _daemon_dir: Option<tempfile::TempDir>,
}

impl Member {
    /// The cluster address other peers reach it at, with `/p2p/<id>`.
    pub fn cluster_address(&self) -> String {
        format!("{}/p2p/{}", self.peer.process.cluster_multiaddr(), self.peer_id)
    }

    /// Its own daemon (panics for a member on the shared daemon).
    pub fn daemon(&self) -> &IpfsDaemon {
        self.daemon.as_ref().expect("this member runs beside the shared daemon")
    }

    /// `GET /consensus`; `Null` when the peer does not answer.
    pub async fn consensus(&self) -> Value {
        match self.peer.request(Method::GET, "/consensus").send().await {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

/// The peer IDs of the members a `GET /consensus` answer lists, sorted.
pub fn member_ids(consensus: &Value) -> Vec<String> {
    let mut ids: Vec<String> = consensus["members"]
        .as_array()
        .map(|members| members.iter().filter_map(|m| m["peer_id"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The voters' peer IDs of a `GET /consensus` answer, sorted.
pub fn voter_ids(consensus: &Value) -> Vec<String> {
    let mut ids: Vec<String> = consensus["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter(|m| m["voter"] == true)
                .filter_map(|m| m["peer_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

pub struct TestCluster {
    pub members: Vec<Member>,
    daemons: Daemons,
    /// Flags every peer of the cluster starts with.
    args: Vec<String>,
    _running: SemaphorePermit<'static>,
}

impl TestCluster {
    /// Starts `size` peers with `args` (plus `--bootstrap` for all but the first) and waits until
    /// every one of them sees all `size` members and a leader.
    pub async fn start(size: usize, daemons: Daemons, args: &[&str]) -> TestCluster {
        let running = RUNNING.acquire().await.expect("the semaphore is never closed");
        let mut cluster = TestCluster {
            members: Vec::new(),
            daemons,
            args: args.iter().map(|a| a.to_string()).collect(),
            _running: running,
        };
        let first = cluster.spawn_member(&[]).await;
        cluster.members.push(first);
        for _ in 1..size {
            let bootstrap = cluster.members[0].cluster_address();
            let member = cluster.spawn_member(&["--bootstrap", &bootstrap]).await;
            cluster.members.push(member);
        }
        cluster.wait_converged(&(0..size).collect::<Vec<_>>()).await;
        cluster
    }

    /// Starts one more peer process beside its daemon with the cluster's flags and `extra`; it is
    /// not in `members` yet (push it when it should count).
    pub async fn spawn_member(&self, extra: &[&str]) -> Member {
        let (daemon, daemon_dir) = match self.daemons {
            Daemons::Own => {
                let (daemon, dir) = start_daemon().await;
                (Some(daemon), Some(dir))
            }
            Daemons::Shared => (None, None),
        };
        let api = match &daemon {
            Some(daemon) => daemon.api_multiaddr().to_string(),
            None => crate::common::shared_daemon().api_multiaddr().to_string(),
        };
        let args: Vec<&str> = self.args.iter().map(String::as_str).chain(extra.iter().copied()).collect();
        let peer = TestPeer::start(&api, &args).await;
        let (status, id) = peer.call(peer.request(Method::GET, "/id")).await;
        assert_eq!(status, 200, "GET /id: {id}");
        let peer_id = id["id"].as_str().expect("an id").to_string();
        Member { peer, daemon, peer_id, _daemon_dir: daemon_dir }
    }

    /// Waits until each of `indexes` lists exactly those members and knows a leader among them.
    pub async fn wait_converged(&self, indexes: &[usize]) {
        let mut expected: Vec<String> = indexes.iter().map(|&i| self.members[i].peer_id.clone()).collect();
        expected.sort();
        for &i in indexes {
            let member = &self.members[i];
            let what = format!("peer {i} ({}) to see members {expected:?} and a leader", member.peer_id);
            wait_for(&what, WAIT, || async {
                let consensus = member.consensus().await;
                let leader = consensus["leader"].as_str().unwrap_or_default().to_string();
                if member_ids(&consensus) == expected && expected.contains(&leader) {
                    Ok(())
                } else {
                    Err(consensus.to_string())
                }
            })
            .await;
        }
    }

    /// Waits until each of `indexes` sees `voters` voters and `learners` learners, no change
    /// half-way: the leader promotes learners once they caught up, and rebalances periodically.
    pub async fn wait_voters(&self, indexes: &[usize], voters: usize, learners: usize) {
        for &i in indexes {
            let member = &self.members[i];
            let what = format!("peer {i} ({}) to see {voters} voters and {learners} learners", member.peer_id);
            wait_for(&what, WAIT, || async {
                let consensus = member.consensus().await;
                let (members, voting) = (member_ids(&consensus).len(), voter_ids(&consensus).len());
                if voting == voters && members == voters + learners && consensus["joint"] == false {
                    Ok(())
                } else {
                    Err(consensus.to_string())
                }
            })
            .await;
        }
    }

    /// The index of the member that `observer` reports as leader, once it reports one among the
    /// members still running.
    pub async fn leader_seen_by(&self, observer: usize) -> usize {
        let what = format!("peer {observer} to know a leader");
        wait_for(&what, WAIT, || async {
            let consensus = self.members[observer].consensus().await;
            let leader = consensus["leader"].as_str().unwrap_or_default();
            match self.members.iter().position(|m| m.peer_id == leader && m.peer.process.pid().is_some()) {
                Some(index) => Ok(index),
                None => Err(consensus.to_string()),
            }
        })
        .await
    }
}

/// A daemon with its own repository in a fresh temporary directory.
async fn start_daemon() -> (IpfsDaemon, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("e2e-cluster-ipfs-").tempdir().expect("temp dir");
    let repo = dir.path().join("repo");
    let daemon = tokio::task::spawn_blocking(move || IpfsDaemon::start_on_ports(&repo, 0, 0))
        .await
        .expect("daemon start task")
        .expect("IPFS daemon");
    (daemon, dir)
}
