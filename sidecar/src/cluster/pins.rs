//! Pinning, unpinning and the pinset views (`/pins`, `/allocations`, recover).

use chrono::Utc;
use futures::stream::{self, BoxStream, StreamExt};

use super::{Cluster, PinTypeFilter};
use crate::allocator::{self, AllocationRequest, Candidate};
use crate::monitor::FREESPACE;
use crate::protocol::RpcRequest;
use crate::state::StateOp;
use crate::types::{Cid, CidKey, GlobalPinInfo, Pin, PinOptions, PinType};
use crate::{Error, Result};

/// Pins read from the state per blocking call while streaming; large enough to amortise the hop
/// to a blocking thread (and, in a status listing, the calls to the other peers), small enough to
/// keep the first item quick.
pub(super) const SCAN_PAGE: usize = 2048;

const NOT_IN_PINSET: &str = "pin is not part of the pinset";

impl Cluster {
    /// `POST /pins/{cid}`: allocates, commits and returns the pin as committed.
    pub async fn pin(&self, cid: Cid, opts: PinOptions) -> Result<Pin> {
        let (min, max) = self.replication_factors(&opts)?;
        let allocations = if allocator::everywhere(min, max) {
            Vec::new()
        } else {
            let existing = self.get_pin(&cid)?;
            let current = existing.as_ref().map(|p| p.allocations.clone()).unwrap_or_default();
            let request = AllocationRequest {
                cid: &cid,
                replication_min: min,
                replication_max: max,
                current: &current,
                preferred: &opts.user_allocations,
            };
            allocator::allocate(&request, &self.allocation_candidates())?
        };
        let pin = Pin {
            replication_factor_min: min,
            replication_factor_max: max,
            name: opts.name,
            mode: opts.mode,
            shard_size: opts.shard_size,
            user_allocations: opts.user_allocations,
            expire_at: opts.expire_at,
            metadata: opts.metadata,
            pin_update: opts.pin_update,
            origins: opts.origins,
            cid,
            pin_type: PinType::Data,
            allocations,
            max_depth: opts.mode.max_depth(),
            reference: None,
            timestamp: Utc::now(),
        };
        // Committed even when this peer's copy already holds it, which may be stale: a pin that
        // changes nothing is a no-op when applied.
        self.inner.consensus.commit(StateOp::Pin(pin.clone())).await?;
        Ok(pin)
    }

    /// `POST /pins/{ipfs,ipns,ipld}/{path}`: resolves through IPFS, then pins.
    pub async fn pin_path(&self, path: &str, opts: PinOptions) -> Result<Pin> {
        let cid = self.inner.ipfs.resolve(path).await?;
        self.pin(cid, opts).await
    }

    /// `DELETE /pins/{cid}`: the pin as it was; `Error::NotFound` when absent.
    pub async fn unpin(&self, cid: &Cid) -> Result<Pin> {
        let pin = match self.get_pin(cid)? {
            Some(pin) => pin,
            None => {
                // This peer may lag behind a pin already acknowledged elsewhere: catch up first.
                self.inner.consensus.commit(StateOp::Barrier).await?;
                self.get_pin(cid)?.ok_or_else(|| Error::NotFound(NOT_IN_PINSET.into()))?
            }
        };
        self.inner.consensus.commit(StateOp::Unpin(pin.key())).await?;
        Ok(pin)
    }

    /// `DELETE /pins/{ipfs,ipns,ipld}/{path}`.
    pub async fn unpin_path(&self, path: &str) -> Result<Pin> {
        let cid = self.inner.ipfs.resolve(path).await?;
        self.unpin(&cid).await
    }

    /// `GET /allocations`: every pin of the pinset, streamed.
    pub fn allocations(&self, filter: PinTypeFilter) -> BoxStream<'static, Result<Pin>> {
        self.scan_pages()
            .flat_map(|page| match page {
                Ok(pins) => stream::iter(pins.into_iter().map(Ok)).boxed(),
                Err(e) => stream::once(futures::future::ready(Err(e))).boxed(),
            })
            .filter(move |pin| futures::future::ready(pin.as_ref().map_or(true, |p| filter.matches(p.pin_type))))
            .boxed()
    }

    /// `GET /allocations/{cid}`: `Error::NotFound("pin is not part of the pinset")` when absent.
    pub async fn allocation(&self, cid: &Cid) -> Result<Pin> {
        self.get_pin(cid)?.ok_or_else(|| Error::NotFound(NOT_IN_PINSET.into()))
    }

    /// `POST /pins/{cid}/recover`: re-queues a failed or missing pin, or a failed unpin, of this peer.
    /// Unless `local`, every other member recovers it too.
    pub async fn recover(&self, cid: &Cid, local: bool) -> Result<GlobalPinInfo> {
        let key = CidKey::of(cid);
        self.recover_locally(Some(&key))?;
        if !local {
            self.recover_on_others(Some(key)).await;
        }
        self.status(cid, local).await
    }

    /// Re-queues this peer's failed operation on `key`, or all of them.
    pub(super) fn recover_locally(&self, key: Option<&CidKey>) -> Result<()> {
        match key {
            Some(key) => {
                let pin = self.inner.state.get(key)?;
                self.inner.tracker.recover(key, pin.as_ref());
            }
            None => drop(self.inner.tracker.recover_all()),
        }
        Ok(())
    }

    /// Asks the other members to recover; one that cannot be reached shows it in the statuses.
    async fn recover_on_others(&self, key: Option<CidKey>) {
        for (peer, answer) in self.ask_others(RpcRequest::Recover(key)).await {
            if let Err(e) = answer {
                tracing::warn!(%peer, error = %e, "a peer could not recover");
            }
        }
    }

    /// `POST /pins/recover`: the pins this peer re-queued, streamed (unless `local`, the other
    /// members recover theirs too).
    pub fn recover_all(&self, local: bool) -> BoxStream<'static, Result<GlobalPinInfo>> {
        let cluster = self.clone();
        stream::once(async move {
            if !local {
                cluster.recover_on_others(None).await;
            }
            let requeued = cluster.inner.tracker.recover_all();
            stream::iter(requeued).then(move |(cid, _)| {
                let cluster = cluster.clone();
                async move { cluster.status(&cid, local).await }
            })
        })
        .flatten()
        .boxed()
    }

    /// One pin of the pinset. A point read finds its pages in redb's cache and takes microseconds:
    /// it runs in place, as a hop to a blocking thread would cost more than the read itself.
    pub(super) fn get_pin(&self, cid: &Cid) -> Result<Option<Pin>> {
        self.inner.state.get(&CidKey::of(cid))
    }

    /// Applies the cluster defaults to 0 factors and checks the result as the reference does.
    fn replication_factors(&self, opts: &PinOptions) -> Result<(i32, i32)> {
        let config = &self.inner.config;
        let min =
            if opts.replication_factor_min == 0 { config.replication_factor_min } else { opts.replication_factor_min };
        let max =
            if opts.replication_factor_max == 0 { config.replication_factor_max } else { opts.replication_factor_max };
        if (min == -1 || max == -1) && min != max {
            return Err(Error::BadRequest(format!(
                "replication factors min {min} and max {max} are invalid: -1 (pin everywhere) must be used for both"
            )));
        }
        if max < min {
            return Err(Error::BadRequest(format!(
                "replication-min ({min}) must be lower or equal than replication-max ({max})"
            )));
        }
        Ok((min, max))
    }

    /// Peers that may receive pins: members with a valid `freespace` metric (their own, shared).
    pub(super) fn allocation_candidates(&self) -> Vec<Candidate> {
        let members: std::collections::HashSet<String> =
            self.inner.consensus.members().into_iter().map(|m| m.peer_id).collect();
        self.inner
            .monitor
            .latest(FREESPACE, Utc::now())
            .into_iter()
            .filter(|m| members.is_empty() || members.contains(&m.peer))
            .filter_map(|m| Some(Candidate { peer: m.peer.parse().ok()?, free_space: m.value.parse().ok()? }))
            .collect()
    }

    /// The whole pinset in key order, read page by page on blocking threads.
    pub(super) fn scan_pages(&self) -> BoxStream<'static, Result<Vec<Pin>>> {
        let cluster = self.clone();
        stream::try_unfold((cluster, None::<CidKey>, false), |(cluster, after, done)| async move {
            if done {
                return Ok(None);
            }
            let page = cluster.read_state(move |state| state.scan(after.as_ref(), SCAN_PAGE)).await?;
            let last = page.last().map(Pin::key);
            let done = page.len() < SCAN_PAGE;
            Ok::<_, Error>(Some((page, (cluster, last, done))))
        })
        .boxed()
    }
}
