//! Pinning, unpinning and the pinset views (`/pins`, `/allocations`, recover).

use chrono::Utc;
use futures::stream::{self, BoxStream, StreamExt};

use super::{Cluster, PinTypeFilter};
use crate::allocator::{self, AllocationRequest, Candidate};
use crate::monitor::FREESPACE;
use crate::protocol::{PageStatus, RpcRequest, RpcResponse, StatusPage};
use crate::state::StateOp;
use crate::types::{Cid, CidKey, GlobalPinInfo, Pin, PinInfoShort, PinOptions, PinType, StatusFilter, TrackerStatus};
use crate::{Error, Result};

/// Pins read from the state per blocking call while streaming; large enough to amortise the hop
/// to a blocking thread, small enough to keep the first item quick.
const SCAN_PAGE: usize = 2048;
/// Pages of a cluster-wide status listing whose other peers' statuses are asked for at once.
const PAGES_IN_FLIGHT: usize = 4;

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
        self.scan_pins()
            .filter(move |pin| futures::future::ready(pin.as_ref().map_or(true, |p| filter.matches(p.pin_type))))
            .boxed()
    }

    /// `GET /allocations/{cid}`: `Error::NotFound("pin is not part of the pinset")` when absent.
    pub async fn allocation(&self, cid: &Cid) -> Result<Pin> {
        self.get_pin(cid)?.ok_or_else(|| Error::NotFound(NOT_IN_PINSET.into()))
    }

    /// `GET /pins`: statuses of every pin (or of `cids`), filtered, streamed. Unless `local`,
    /// every member's status of each pin is in its `peer_map`, asked page by page.
    pub fn status_all(
        &self,
        filter: StatusFilter,
        cids: Option<Vec<Cid>>,
        local: bool,
    ) -> BoxStream<'static, Result<GlobalPinInfo>> {
        let cluster = self.clone();
        let infos = if let Some(cids) = cids {
            let cluster = cluster.clone();
            stream::iter(cids)
                .then(move |cid| {
                    let cluster = cluster.clone();
                    async move { Ok(cluster.pin_info(&cid, cluster.get_pin(&cid)?)) }
                })
                .boxed()
        } else {
            let in_pinset = {
                let cluster = cluster.clone();
                self.scan_pins().map(move |pin| pin.map(|pin| cluster.pin_info(&pin.cid.clone(), Some(pin))))
            };
            // Unpins still running or failed concern CIDs that have already left the pinset.
            let leaving = {
                let cluster = cluster.clone();
                stream::once(async move {
                    let infos: Vec<Result<GlobalPinInfo>> = cluster
                        .inner
                        .tracker
                        .in_flight_unpins()
                        .into_iter()
                        .map(|(cid, _)| Ok(cluster.pin_info(&cid, None)))
                        .collect();
                    stream::iter(infos)
                })
                .flatten()
            };
            in_pinset.chain(leaving).boxed()
        };
        let infos = if local || self.other_members().is_empty() {
            infos
        } else {
            // Items ready together go to the other peers as one call each, a few pages at once
            // (in order), each page's calls and merge a task of its own, so that reading the
            // pinset, the other peers' answers, merging and encoding the response overlap.
            infos
                .ready_chunks(SCAN_PAGE)
                .map(move |page| {
                    let cluster = cluster.clone();
                    let task = tokio::spawn(async move { cluster.add_peer_statuses(page).await });
                    async move {
                        task.await.unwrap_or_else(|e| vec![Err(Error::Io(std::io::Error::other(e.to_string())))])
                    }
                })
                .buffered(PAGES_IN_FLIGHT)
                .flat_map(stream::iter)
                .boxed()
        };
        infos.filter(move |info| futures::future::ready(info.as_ref().map_or(true, |i| filter.matches_any(i)))).boxed()
    }

    /// `GET /pins/{cid}`: not in the pinset = every peer `unpinned` (or what is still in flight).
    pub async fn status(&self, cid: &Cid, local: bool) -> Result<GlobalPinInfo> {
        let info = self.pin_info(cid, self.get_pin(cid)?);
        if local {
            return Ok(info);
        }
        self.add_peer_statuses(vec![Ok(info)]).await.pop().expect("one item in, one out")
    }

    /// Puts every other member's status of each pin into its `peer_map`; a member that cannot
    /// answer shows `cluster_error` with the reason.
    async fn add_peer_statuses(&self, mut page: Vec<Result<GlobalPinInfo>>) -> Vec<Result<GlobalPinInfo>> {
        let keys: Vec<CidKey> = page.iter().filter_map(|info| info.as_ref().ok().map(|i| CidKey::of(&i.cid))).collect();
        if keys.is_empty() {
            return page;
        }
        let keys = &keys;
        let answers = futures::future::join_all(
            self.other_members()
                .into_iter()
                .map(|(peer, addrs)| async move { (peer.to_string(), self.peer_statuses(peer, addrs, keys).await) }),
        )
        .await;
        let now = Utc::now();
        for (peer, statuses) in answers {
            let mut statuses = statuses.map(Vec::into_iter);
            for info in page.iter_mut().filter_map(|info| info.as_mut().ok()) {
                let status = match &mut statuses {
                    Ok(statuses) => statuses.next().expect("as many statuses as keys"),
                    Err(error) => PinInfoShort {
                        peername: String::new(),
                        ipfs_peer_id: None,
                        ipfs_peer_addresses: Vec::new(),
                        status: TrackerStatus::ClusterError,
                        timestamp: now,
                        error: error.clone(),
                        attempt_count: 0,
                        priority_pin: false,
                    },
                };
                info.peer_map.insert(peer.clone(), status);
            }
        }
        page
    }

    /// A peer's status of each of `keys`, in order.
    async fn peer_statuses(
        &self,
        peer: libp2p::PeerId,
        addrs: Vec<libp2p::Multiaddr>,
        keys: &[CidKey],
    ) -> std::result::Result<Vec<PinInfoShort>, String> {
        match self.call_peer(peer, addrs, RpcRequest::Statuses(keys.to_vec())).await {
            Ok(RpcResponse::Statuses(page)) if page.statuses.len() == keys.len() => Ok(page.into_statuses().collect()),
            Ok(RpcResponse::Statuses(page)) => {
                Err(format!("the peer answered {} statuses for {} pins", page.statuses.len(), keys.len()))
            }
            Ok(_) => Err("the peer answered something else".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// This peer's status of each of `keys` (the answer to another peer's
    /// [`RpcRequest::Statuses`]).
    pub(super) async fn local_status_page(&self, keys: &[CidKey]) -> Result<StatusPage> {
        let keys = keys.to_vec();
        let pins: Vec<(Option<Pin>, CidKey)> =
            self.read_state(move |state| keys.into_iter().map(|key| Ok((state.get(&key)?, key))).collect()).await?;
        let ipfs = self.inner.ipfs_id.read().expect("ipfs id lock").clone();
        let statuses = pins
            .iter()
            .map(|(pin, key)| {
                let local = self.inner.tracker.status_of(key, pin.as_ref());
                let (secs, nanos) = (local.timestamp.timestamp(), local.timestamp.timestamp_subsec_nanos());
                PageStatus(local.status, secs, nanos, local.error, local.attempt_count, local.priority_pin)
            })
            .collect();
        Ok(StatusPage {
            peername: self.inner.config.peername.clone(),
            ipfs_peer_id: ipfs.id,
            ipfs_peer_addresses: ipfs.addresses,
            statuses,
        })
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
    fn get_pin(&self, cid: &Cid) -> Result<Option<Pin>> {
        self.inner.state.get(&CidKey::of(cid))
    }

    /// This peer's view of one pin, as the cluster-wide object (the pin's fields move into it: on
    /// a listing of millions, copying them would be most of the work).
    fn pin_info(&self, cid: &Cid, pin: Option<Pin>) -> GlobalPinInfo {
        let short = self.local_status(&CidKey::of(cid), pin.as_ref());
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

    fn local_status(&self, key: &CidKey, pin: Option<&Pin>) -> PinInfoShort {
        let local = self.inner.tracker.status_of(key, pin);
        let ipfs = self.inner.ipfs_id.read().expect("ipfs id lock").clone();
        PinInfoShort {
            peername: self.inner.config.peername.clone(),
            ipfs_peer_id: ipfs.id,
            ipfs_peer_addresses: ipfs.addresses,
            status: local.status,
            timestamp: local.timestamp,
            error: local.error,
            attempt_count: local.attempt_count,
            priority_pin: local.priority_pin,
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
