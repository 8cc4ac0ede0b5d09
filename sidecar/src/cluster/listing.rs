//! The status views (`GET /pins`, `GET /pins/{cid}`): each pin with every member's status of it,
//! gathered a page of pins at a time as a [`StatusSheet`].

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use futures::stream::{self, BoxStream, StreamExt};

use super::pins::SCAN_PAGE;
use super::Cluster;
use crate::protocol::{PageStatus, RpcRequest, RpcResponse, StatusPage};
use crate::tracker::LocalPinStatus;
use crate::types::{Cid, CidKey, GlobalPinInfo, Pin, PinInfoShort, StatusFilter};
use crate::{Error, Result};

/// Pages of a status listing in the making at once (asking the other peers, merging, encoding).
const PAGES_IN_FLIGHT: usize = 4;

/// A page of pins and every member's statuses of them, column by column: each peer's name, daemon
/// and addresses are held once per page, not once per pin.
#[derive(Clone, Debug)]
pub struct StatusSheet {
    /// The page's CIDs in order, each with its pin; `None` for a CID outside the pinset (an unpin
    /// still in flight, or a CID asked for by name).
    pub rows: Vec<Row>,
    /// This peer's column and, unless the view is local, every other member's, ordered by peer ID
    /// text as `peer_map` is; each holds one status per row.
    pub columns: Vec<PeerColumn>,
}

/// A CID and its pin, if it is in the pinset.
pub type Row = (Cid, Option<Pin>);

/// One member's statuses of a sheet's rows.
#[derive(Clone, Debug)]
pub struct PeerColumn {
    /// The member's cluster peer ID, as `peer_map` keys it.
    pub peer: String,
    pub page: StatusPage,
}

impl StatusSheet {
    /// Whether any member's status of row `row` is one the filter asks for.
    pub fn row_matches(&self, row: usize, filter: &StatusFilter) -> bool {
        self.columns.iter().any(|column| filter.matches(column.page.statuses[row].0))
    }

    /// The rows the filter passes, each as the cluster-wide object (the pins' fields move into it).
    pub fn into_infos(self, filter: &StatusFilter) -> Vec<GlobalPinInfo> {
        let passes: Vec<bool> = (0..self.rows.len()).map(|row| self.row_matches(row, filter)).collect();
        let mut columns: Vec<_> =
            self.columns.into_iter().map(|column| (column.peer, column.page.into_statuses())).collect();
        self.rows
            .into_iter()
            .zip(passes)
            .filter_map(|((cid, pin), passes)| {
                let peer_map = columns
                    .iter_mut()
                    .map(|(peer, statuses)| (peer.clone(), statuses.next().expect("one status per row")))
                    .collect();
                passes.then(|| global_pin_info(cid, pin, peer_map))
            })
            .collect()
    }
}

fn global_pin_info(cid: Cid, pin: Option<Pin>, peer_map: BTreeMap<String, PinInfoShort>) -> GlobalPinInfo {
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
            cid,
            name: String::new(),
            allocations: Vec::new(),
            origins: Vec::new(),
            created: None,
            metadata: None,
            peer_map,
        },
    }
}

impl Cluster {
    /// `GET /pins`: every pin of the pinset (or the `cids`), then the CIDs whose unpin is still in
    /// flight, as sheets of every member's statuses (only this peer's when `local`). Each sheet is
    /// made, and turned into `T` by `finish`, in a task of its own, a few at once and in order, so
    /// that reading the pinset, the other peers' answers and the encoding overlap and spread over
    /// the cores.
    pub fn status_sheets<T: Send + 'static>(
        &self,
        cids: Option<Vec<Cid>>,
        local: bool,
        finish: impl Fn(StatusSheet) -> T + Send + Sync + 'static,
    ) -> BoxStream<'static, Result<T>> {
        let cluster = self.clone();
        let finish = Arc::new(finish);
        self.sheet_rows(cids)
            .map(move |rows| {
                let (cluster, finish) = (cluster.clone(), finish.clone());
                let task = tokio::spawn(async move { Ok(finish(cluster.sheet(rows?, local).await)) });
                async move { task.await.unwrap_or_else(|e| Err(Error::Io(std::io::Error::other(e.to_string())))) }
            })
            .buffered(PAGES_IN_FLIGHT)
            .boxed()
    }

    /// `GET /pins/{cid}`: not in the pinset = every peer `unpinned` (or what is still in flight).
    pub async fn status(&self, cid: &Cid, local: bool) -> Result<GlobalPinInfo> {
        let sheet = self.sheet(vec![(*cid, self.get_pin(cid)?)], local).await;
        Ok(sheet.into_infos(&StatusFilter::default()).pop().expect("one row in, one out"))
    }

    /// The rows of the sheets, page by page: the asked-for CIDs, or the pinset in key order and then
    /// the unpins in flight (their CIDs have already left it).
    fn sheet_rows(&self, cids: Option<Vec<Cid>>) -> BoxStream<'static, Result<Vec<Row>>> {
        let cluster = self.clone();
        if let Some(cids) = cids {
            let pages: Vec<Vec<Cid>> = cids.chunks(SCAN_PAGE).map(<[Cid]>::to_vec).collect();
            return stream::iter(pages)
                .then(move |page| {
                    let cluster = cluster.clone();
                    async move {
                        let keys: Vec<CidKey> = page.iter().map(CidKey::of).collect();
                        let pins = cluster.read_state(move |state| state.get_many(&keys)).await?;
                        Ok(page.into_iter().zip(pins).collect())
                    }
                })
                .boxed();
        }
        let in_pinset = self.scan_pages().map(|page| Ok(page?.into_iter().map(|pin| (pin.cid, Some(pin))).collect()));
        let leaving = stream::once(async move {
            cluster.inner.tracker.in_flight_unpins().into_iter().map(|(cid, _)| (cid, None)).collect::<Vec<_>>()
        })
        .filter(|rows| futures::future::ready(!rows.is_empty()))
        .map(Ok);
        in_pinset.chain(leaving).boxed()
    }

    /// This peer's column of `rows` and, unless `local`, every other member's; a member that cannot
    /// answer shows `cluster_error` with the reason.
    async fn sheet(&self, rows: Vec<Row>, local: bool) -> StatusSheet {
        let keys: Vec<CidKey> = rows.iter().map(|(cid, _)| CidKey::of(cid)).collect();
        let mine = self.local_status_page(keys.iter().zip(rows.iter().map(|(_, pin)| pin.as_ref())));
        let mut columns = vec![PeerColumn { peer: self.inner.me.clone(), page: mine }];
        if !local && !rows.is_empty() {
            let keys = &keys;
            let others = self.other_members().into_iter().map(|(peer, addrs)| async move {
                let page = self.peer_status_page(peer, addrs, keys).await;
                let page = page.unwrap_or_else(|error| StatusPage::failed(keys.len(), error, Utc::now()));
                PeerColumn { peer: peer.to_string(), page }
            });
            columns.extend(futures::future::join_all(others).await);
        }
        columns.sort_by(|a, b| a.peer.cmp(&b.peer));
        StatusSheet { rows, columns }
    }

    /// A peer's statuses of `keys`, in order.
    async fn peer_status_page(
        &self,
        peer: libp2p::PeerId,
        addrs: Vec<libp2p::Multiaddr>,
        keys: &[CidKey],
    ) -> std::result::Result<StatusPage, String> {
        match self.call_peer(peer, addrs, RpcRequest::Statuses(keys.to_vec())).await {
            Ok(RpcResponse::Statuses(page)) if page.statuses.len() == keys.len() => Ok(page),
            Ok(RpcResponse::Statuses(page)) => {
                Err(format!("the peer answered {} statuses for {} pins", page.statuses.len(), keys.len()))
            }
            Ok(_) => Err("the peer answered something else".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// This peer's statuses of `keys` (the answer to another peer's [`RpcRequest::Statuses`]).
    pub(super) async fn answer_status_page(&self, keys: Vec<CidKey>) -> Result<StatusPage> {
        let (pins, keys) = self.read_state(move |state| Ok((state.get_many(&keys)?, keys))).await?;
        Ok(self.local_status_page(keys.iter().zip(pins.iter().map(Option::as_ref))))
    }

    /// This peer's statuses of these CIDs, each with its pin if it has one.
    fn local_status_page<'a>(&self, pins: impl IntoIterator<Item = (&'a CidKey, Option<&'a Pin>)>) -> StatusPage {
        let statuses = self.inner.tracker.statuses_of(pins).into_iter().map(page_status).collect();
        let ipfs = self.inner.ipfs_id.read().expect("ipfs id lock").clone();
        StatusPage {
            peername: self.inner.config.peername.clone(),
            ipfs_peer_id: ipfs.id,
            ipfs_peer_addresses: ipfs.addresses,
            statuses,
        }
    }
}

fn page_status(local: LocalPinStatus) -> PageStatus {
    let (secs, nanos) = (local.timestamp.timestamp(), local.timestamp.timestamp_subsec_nanos());
    PageStatus(local.status, secs, nanos, local.error, local.attempt_count, local.priority_pin)
}
