//! The peer's periodic work: probe the daemon and share metrics with the other members; link the
//! IPFS daemons; record this peer's address when it changed; and, on the leader, unpin expired
//! pins, keep the voters right and re-allocate the pins of gone peers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;

use super::Cluster;
use crate::monitor::{self, FREESPACE, PING};
use crate::state::StateOp;
use crate::types::{ConsensusRole, IpfsId};

/// How long `Cluster::start` waits for the first probe of the IPFS daemon.
const FIRST_PROBE_WAIT: Duration = Duration::from_secs(3);

impl Cluster {
    pub(super) async fn spawn_background_tasks(&self) {
        let (monitor, expiry) = (self.inner.config.monitor_ping_interval, self.inner.config.expiry_check_interval);
        // The probes' task probes at once, and `start` waits for that first probe, so that
        // allocation has this peer's metrics at once; but only so long: a slow daemon must not
        // hold start-up back (js-ipfs counts every block for `repo/stat`, minutes for a million).
        let (probed, first_probe) = tokio::sync::oneshot::channel();
        let cluster = self.clone();
        let probes = tokio::spawn(async move {
            tokio::select! {
                _ = cluster.probe_and_publish() => { let _ = probed.send(()); }
                _ = cluster.inner.shutdown.cancelled() => return,
            }
            cluster.every(monitor, |c| async move { c.probe_and_publish().await }).await
        });
        self.inner.tasks.lock().await.push(probes);
        if tokio::time::timeout(FIRST_PROBE_WAIT, first_probe).await.is_err() {
            tracing::info!(
                waited = ?FIRST_PROBE_WAIT,
                "the IPFS daemon has not answered the first probe (id, repo/stat) yet: starting without its metrics"
            );
        }
        // Separate tasks: a slow call to another peer must not delay this peer's own probe.
        self.spawn_every(expiry, |c| async move { c.unpin_expired().await }).await;
        self.spawn_every(monitor, |c| async move { c.link_ipfs_daemons().await }).await;
        self.spawn_every(monitor, |c| async move { c.leader_housekeeping().await }).await;
        self.spawn_every(monitor, |c| async move { c.announce_address().await }).await;
    }

    /// A member that came back on another address says so (see `Consensus::announce_address`).
    async fn announce_address(&self) {
        if let Err(e) = self.inner.consensus.announce_address().await {
            tracing::warn!(error = %e, "could not record this peer's new address; retrying");
        }
    }

    /// Runs `work` every `period` on a task of its own until shutdown.
    async fn spawn_every<F, Fut>(&self, period: Duration, work: F)
    where
        F: Fn(Cluster) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(self.clone().every(period, work));
        self.inner.tasks.lock().await.push(task);
    }

    /// On the leader only: finish or rebalance the voter set, then move pins off gone peers.
    async fn leader_housekeeping(&self) {
        if let Err(e) = self.inner.consensus.rebalance_voters(None).await {
            tracing::warn!(error = %e, "could not adjust the voters");
        }
        if let Some(grace) = self.inner.config.repin_after {
            self.repin_pass(grace).await;
        }
    }

    /// Runs `work` every `period` until shutdown, which also stops a round under way: consensus
    /// is already stopped then, so its writes would fail anyway, and a long round (a re-allocation
    /// pass over millions of pins) must not hold the process past its grace period.
    async fn every<F, Fut>(self, period: Duration, work: F)
    where
        F: Fn(Cluster) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = work(self.clone()) => {}
            }
        }
    }

    /// Asks the daemon who it is and how full it is, and publishes `ping` and `freespace`.
    /// A daemon that does not answer stops the metrics, which then expire and raise alerts.
    async fn probe_and_publish(&self) {
        let inner = &self.inner;
        let me = inner.me.clone();
        let ttl = inner.config.monitor_ping_interval * 2;
        let now = Utc::now();
        let mut shared = Vec::new();
        match inner.ipfs.id().await {
            Ok(id) => {
                if !inner.ipfs_up.swap(true, Ordering::Relaxed) {
                    tracing::info!(ipfs_id = ?id.id, "IPFS daemon answers");
                }
                *inner.ipfs_id.write().expect("ipfs id lock") = id;
                shared.push(monitor::metric(PING, &me, 1, ttl, now));
            }
            Err(e) => {
                if inner.ipfs_up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "IPFS daemon does not answer");
                }
                let mut id = inner.ipfs_id.write().expect("ipfs id lock");
                *id = IpfsId { error: e.to_string(), ..id.clone() };
            }
        }
        if inner.ipfs_up.load(Ordering::Relaxed) {
            match inner.ipfs.repo_stat().await {
                Ok(stat) => shared.push(monitor::metric(FREESPACE, &me, stat.free_space(), ttl, now)),
                Err(e) => tracing::warn!(error = %e, "cannot read the daemon's repo/stat"),
            }
        }
        for metric in &shared {
            inner.monitor.publish(metric.clone(), now);
        }
        self.share_metrics(shared);
        inner.monitor.check_expired(Utc::now());
    }

    /// On the leader only: unpins every pin whose `expire_at` has passed, through consensus. The
    /// condition is checked again when applied, so a pin renewed since the read stays.
    pub(super) async fn unpin_expired(&self) {
        if self.consensus_status().role != ConsensusRole::Leader {
            return;
        }
        let now = Utc::now();
        let expired = match self.read_state(move |state| state.expired(now)).await {
            Ok(expired) => expired,
            Err(e) => return tracing::error!(error = %e, "cannot look for expired pins"),
        };
        for pin in expired {
            tracing::info!(cid = %pin.cid, expire_at = ?pin.expire_at, "pin expired: unpinning");
            if let Err(e) = self.inner.consensus.commit(StateOp::UnpinIfExpired { key: pin.key(), now }).await {
                tracing::warn!(cid = %pin.cid, error = %e, "could not unpin an expired pin; will retry");
            }
        }
    }
}
