//! Pinning, unpinning and the pinset views (`/pins`, `/allocations`, recover).

use chrono::Utc;
use futures::stream::{self, BoxStream, StreamExt};

use super::{Cluster, PinTypeFilter};
use crate::allocator::{self, AllocationRequest, Candidate};
use crate::monitor::FREESPACE;
use crate::state::StateOp;
use crate::types::{Cid, CidKey, GlobalPinInfo, Pin, PinInfoShort, PinOptions, PinType, StatusFilter};
use crate::{Error, Result};

/// Pins read from the state per blocking call while streaming; large enough to amortise the hop
/// to a blocking thread, small enough to keep the first item quick.
const SCAN_PAGE: usize = 2048;

const NOT_IN_PINSET: &str = "pin is not part of the pinset";

impl Cluster {
    /// `POST /pins/{cid}`: allocates, commits and returns the pin as committed.
    pub async fn pin(&self, cid: Cid, opts: PinOptions) -> Result<Pin> {
        let (min, max) = self.replication_factors(&opts)?;
        let existing = self.get_pin(&cid)?;
        let current = existing.as_ref().map(|p| p.allocations.clone()).unwrap_or_default();
        let candidates = self.allocation_candidates();
        let request = AllocationRequest {
            cid: &cid,
            replication_min: min,
            replication_max: max,
            current: &current,
            preferred: &opts.user_allocations,
        };
        let allocations = allocator::allocate(&request, &candidates)?;
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
        if let Some(existing) = existing.filter(|e| same_pin(e, &pin)) {
            return Ok(existing);
        }
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
        let pin = self.get_pin(cid)?.ok_or_else(|| Error::NotFound(NOT_IN_PINSET.into()))?;
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
        self.scan_pins()
            .filter(move |pin| futures::future::ready(pin.as_ref().map_or(true, |p| filter.matches(p.pin_type))))
            .boxed()
    }

    /// `GET /allocations/{cid}`: `Error::NotFound("pin is not part of the pinset")` when absent.
    pub async fn allocation(&self, cid: &Cid) -> Result<Pin> {
        self.get_pin(cid)?.ok_or_else(|| Error::NotFound(NOT_IN_PINSET.into()))
    }

    /// `GET /pins`: statuses of every pin (or of `cids`), filtered, streamed. With one peer the
    /// cluster-wide and the local view coincide; `local` matters once there are several.
    pub fn status_all(
        &self,
        filter: StatusFilter,
        cids: Option<Vec<Cid>>,
        _local: bool,
    ) -> BoxStream<'static, Result<GlobalPinInfo>> {
        let cluster = self.clone();
        if let Some(cids) = cids {
            return stream::iter(cids)
                .then(move |cid| {
                    let cluster = cluster.clone();
                    async move { cluster.status(&cid, true).await }
                })
                .filter(move |info| futures::future::ready(info.as_ref().map_or(true, |i| filter.matches_any(i))))
                .boxed();
        }
        let in_pinset = {
            let cluster = cluster.clone();
            self.scan_pins().map(move |pin| pin.map(|pin| cluster.pin_info(&pin.cid.clone(), Some(pin))))
        };
        // Unpins still running or failed concern CIDs that have already left the pinset.
        let leaving = stream::once(async move {
            let infos: Vec<Result<GlobalPinInfo>> = cluster
                .inner
                .tracker
                .in_flight_unpins()
                .into_iter()
                .map(|(cid, _)| Ok(cluster.pin_info(&cid, None)))
                .collect();
            stream::iter(infos)
        })
        .flatten();
        in_pinset
            .chain(leaving)
            .filter(move |info| futures::future::ready(info.as_ref().map_or(true, |i| filter.matches_any(i))))
            .boxed()
    }

    /// `GET /pins/{cid}`: not in the pinset = every peer `unpinned` (or what is still in flight).
    pub async fn status(&self, cid: &Cid, _local: bool) -> Result<GlobalPinInfo> {
        let pin = self.get_pin(cid)?;
        Ok(self.pin_info(cid, pin))
    }

    /// `POST /pins/{cid}/recover`: re-queues a failed or missing pin, or a failed unpin, of this peer.
    pub async fn recover(&self, cid: &Cid, local: bool) -> Result<GlobalPinInfo> {
        let pin = self.get_pin(cid)?;
        self.inner.tracker.recover(&CidKey::of(cid), pin.as_ref());
        self.status(cid, local).await
    }

    /// `POST /pins/recover`: the pins re-queued, streamed.
    pub fn recover_all(&self, local: bool) -> BoxStream<'static, Result<GlobalPinInfo>> {
        let cluster = self.clone();
        stream::once(async move {
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
    fn get_pin(&self, cid: &Cid) -> Result<Option<Pin>> {
        self.inner.state.get(&CidKey::of(cid))
    }

    /// This peer's view of one pin, as the cluster-wide object (the pin's fields move into it: on
    /// a listing of millions, copying them would be most of the work).
    fn pin_info(&self, cid: &Cid, pin: Option<Pin>) -> GlobalPinInfo {
        let local = self.inner.tracker.status_of(&CidKey::of(cid), pin.as_ref());
        let ipfs = self.inner.ipfs_id.read().expect("ipfs id lock").clone();
        let short = PinInfoShort {
            peername: self.inner.config.peername.clone(),
            ipfs_peer_id: ipfs.id,
            ipfs_peer_addresses: ipfs.addresses,
            status: local.status,
            timestamp: local.timestamp,
            error: local.error,
            attempt_count: local.attempt_count,
            priority_pin: local.priority_pin,
        };
        let peer_map = [(self.inner.me.clone(), short)].into_iter().collect();
        match pin {
            Some(pin) => GlobalPinInfo {
                cid: pin.cid,
                name: pin.name,
                allocations: pin.allocations,
                origins: pin.origins,
                created: Some(pin.timestamp),
                metadata: (!pin.metadata.is_empty()).then_some(pin.metadata),
                peer_map,
            },
            None => GlobalPinInfo {
                cid: *cid,
                name: String::new(),
                allocations: Vec::new(),
                origins: Vec::new(),
                created: None,
                metadata: None,
                peer_map,
            },
        }
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

    /// Peers that may receive pins: those with a valid `freespace` metric.
    fn allocation_candidates(&self) -> Vec<Candidate> {
        self.inner
            .monitor
            .latest(FREESPACE, Utc::now())
            .into_iter()
            .filter_map(|m| Some(Candidate { peer: m.peer.parse().ok()?, free_space: m.value.parse().ok()? }))
            .collect()
    }

    /// The whole pinset in key order, read page by page on blocking threads.
    fn scan_pins(&self) -> BoxStream<'static, Result<Pin>> {
        let cluster = self.clone();
        stream::try_unfold((cluster, None::<CidKey>, false), |(cluster, after, done)| async move {
            if done {
                return Ok(None);
            }
            let page = cluster.read_state(move |state| state.scan(after.as_ref(), SCAN_PAGE)).await?;
            let last = page.last().map(Pin::key);
            let done = page.len() < SCAN_PAGE;
            Ok::<_, Error>(Some((stream::iter(page.into_iter().map(Ok)), (cluster, last, done))))
        })
        .map(|page| match page {
            Ok(pins) => pins.boxed(),
            Err(e) => stream::once(futures::future::ready(Err(e))).boxed(),
        })
        .flatten()
        .boxed()
    }
}

/// Whether pinning again would change nothing (same options and allocations; the time differs).
fn same_pin(existing: &Pin, new: &Pin) -> bool {
    let mut normalized = new.clone();
    normalized.timestamp = existing.timestamp;
    let mut a = existing.allocations.clone();
    let mut b = normalized.allocations.clone();
    a.sort();
    b.sort();
    normalized.allocations = existing.allocations.clone();
    a == b && &normalized == existing
}
