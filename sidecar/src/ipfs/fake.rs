//! `FakeIpfs`: a fast, in-process stand-in for an IPFS daemon. It is a FAKE, for unit tests and
//! throughput benchmarks only; nothing here talks to a real daemon or stores content.
//!
//! What it does: keeps pins in memory (`CidKey -> PinMode`), answers `id` with a stable random peer
//! id on a loopback address, returns a configurable [`RepoStat`], resolves `/ipfs/<cid>[/...]` and
//! `/ipld/<cid>[/...]` to `<cid>`, and `add` hashes each file part of the multipart body as ONE raw
//! block (sha2-256, codec raw, CIDv1): no chunking, no UnixFS, so CIDs differ from a real daemon's for
//! the same bytes. `add` does not pin (the cluster pins through its tracker); `repo_gc` removes
//! nothing. `swarm_connect` records the address it was given (no dialling: any address ending in
//! `/p2p/<id>` other than its own connects) and `swarm_peers` lists the peers so connected.
//!
//! Fault injection: [`FakeIpfs::set_unreachable`] (every call fails with
//! [`Error::IpfsUnreachable`]), [`FakeIpfs::fail_next_pins`], [`FakeIpfs::set_op_delay`], a gate
//! that holds pin and unpin calls until released ([`FakeIpfs::hold_ops`], [`FakeIpfs::release_ops`],
//! [`FakeIpfs::open_gate`]) so tests can observe `pinning`/`pin_queued` deterministically, and
//! [`FakeIpfs::remove_pin_behind_back`] / [`FakeIpfs::add_pin_behind_back`] for changes the cluster
//! did not make; [`FakeIpfs::disconnect_all`] for a daemon that restarted and lost its connections.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::car::ByteStream;
use super::{AddRequest, AddedEntry, GcKey, IpfsConnector, RepoStat};
use crate::types::{Cid, CidKey, IpfsId, PinMode};
use crate::{Error, Result};

/// Multicodec of raw blocks and of sha2-256 multihashes.
const RAW_CODEC: u64 = 0x55;
const SHA2_256: u64 = 0x12;

/// An in-memory fake of the IPFS daemon (see the module docs). Cheap to share behind an `Arc`.
pub struct FakeIpfs {
    peer_id: PeerId,
    address: Multiaddr,
    state: Mutex<FakeState>,
    /// Present while pin/unpin calls are held; each call takes one permit to pass.
    gate: Mutex<Option<Arc<Semaphore>>>,
    waiting_at_gate: AtomicUsize,
    ops_in_flight: AtomicUsize,
    max_ops_in_flight: AtomicUsize,
    pin_calls: AtomicU64,
    unpin_calls: AtomicU64,
    pin_ls_calls: AtomicU64,
    swarm_connect_calls: AtomicU64,
}

#[derive(Default)]
struct FakeState {
    pins: HashMap<CidKey, PinMode>,
    unreachable: bool,
    failures_left: u32,
    unpin_failures_left: u32,
    failure_message: String,
    op_delay: Duration,
    repo_stat: RepoStat,
    /// `Some` while recording the order of pin calls (off by default: benchmarks make millions).
    pin_log: Option<Vec<Cid>>,
    /// The daemons connected by `swarm_connect`, in connection order, each with the address used.
    connected: Vec<(PeerId, Multiaddr)>,
    /// The blocks `dag_import` took in.
    imported: HashSet<CidKey>,
}

impl Default for FakeIpfs {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeIpfs {
    /// A reachable daemon with no pins, a random peer id at `/ip4/127.0.0.1/tcp/4001/p2p/<id>`, and
    /// 10 GiB of storage of which nothing is used.
    pub fn new() -> Self {
        let peer_id = PeerId::random();
        let address = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer_id}").parse().expect("a valid multiaddr");
        let state = FakeState { repo_stat: RepoStat { repo_size: 0, storage_max: 10 << 30 }, ..FakeState::default() };
        FakeIpfs {
            peer_id,
            address,
            state: Mutex::new(state),
            gate: Mutex::new(None),
            waiting_at_gate: AtomicUsize::new(0),
            ops_in_flight: AtomicUsize::new(0),
            max_ops_in_flight: AtomicUsize::new(0),
            pin_calls: AtomicU64::new(0),
            unpin_calls: AtomicU64::new(0),
            pin_ls_calls: AtomicU64::new(0),
            swarm_connect_calls: AtomicU64::new(0),
        }
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn set_repo_stat(&self, stat: RepoStat) {
        self.lock().repo_stat = stat;
    }

    /// While set, every call fails with [`Error::IpfsUnreachable`] (calls already past the check,
    /// e.g. held at the gate, complete normally).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    /// The next `count` pin calls fail with `Error::Ipfs(message)`.
    pub fn fail_next_pins(&self, count: u32, message: &str) {
        let mut state = self.lock();
        state.failures_left = count;
        state.failure_message = message.to_string();
    }

    /// The next `count` unpin calls fail with `Error::Ipfs(message)`.
    pub fn fail_next_unpins(&self, count: u32, message: &str) {
        let mut state = self.lock();
        state.unpin_failures_left = count;
        state.failure_message = message.to_string();
    }

    /// Every pin and unpin takes `delay` (tokio time, so paused-time tests skip it).
    pub fn set_op_delay(&self, delay: Duration) {
        self.lock().op_delay = delay;
    }

    /// From now on pin and unpin calls wait at the gate until [`release_ops`](Self::release_ops)
    /// or [`open_gate`](Self::open_gate).
    pub fn hold_ops(&self) {
        *self.gate.lock().expect("gate lock") = Some(Arc::new(Semaphore::new(0)));
    }

    /// Lets `count` held (or future) pin/unpin calls through the gate.
    pub fn release_ops(&self, count: usize) {
        if let Some(gate) = self.gate.lock().expect("gate lock").as_ref() {
            gate.add_permits(count);
        }
    }

    /// Lets every held call through and stops holding.
    pub fn open_gate(&self) {
        if let Some(gate) = self.gate.lock().expect("gate lock").take() {
            gate.close();
        }
    }

    /// Pin/unpin calls currently waiting at the gate.
    pub fn waiting_at_gate(&self) -> usize {
        self.waiting_at_gate.load(Ordering::SeqCst)
    }

    /// Unpins `cid` as if someone ran `ipfs pin rm` on the daemon.
    pub fn remove_pin_behind_back(&self, cid: &Cid) {
        self.lock().pins.remove(&CidKey::of(cid));
    }

    /// Pins `cid` as if someone ran `ipfs pin add` on the daemon.
    pub fn add_pin_behind_back(&self, cid: &Cid, mode: PinMode) {
        self.lock().pins.insert(CidKey::of(cid), mode);
    }

    pub fn pinned(&self, cid: &Cid) -> Option<PinMode> {
        self.lock().pins.get(&CidKey::of(cid)).copied()
    }

    pub fn pin_count(&self) -> usize {
        self.lock().pins.len()
    }

    /// Starts recording which CIDs pin calls name, in call order.
    pub fn record_pin_calls(&self) {
        self.lock().pin_log = Some(Vec::new());
    }

    /// The pin calls recorded since [`record_pin_calls`](Self::record_pin_calls).
    pub fn recorded_pin_calls(&self) -> Vec<Cid> {
        self.lock().pin_log.clone().unwrap_or_default()
    }

    /// Whether `dag_import` took in the block `cid`.
    pub fn has_block(&self, cid: &Cid) -> bool {
        self.lock().imported.contains(&CidKey::of(cid))
    }

    /// Pin calls made, including failed ones.
    pub fn pin_calls(&self) -> u64 {
        self.pin_calls.load(Ordering::SeqCst)
    }

    pub fn unpin_calls(&self) -> u64 {
        self.unpin_calls.load(Ordering::SeqCst)
    }

    pub fn pin_ls_calls(&self) -> u64 {
        self.pin_ls_calls.load(Ordering::SeqCst)
    }

    /// `swarm_connect` calls made, including failed ones.
    pub fn swarm_connect_calls(&self) -> u64 {
        self.swarm_connect_calls.load(Ordering::SeqCst)
    }

    /// The addresses the daemon is connected through, one per connected peer, in connection order.
    pub fn connected_addresses(&self) -> Vec<Multiaddr> {
        self.lock().connected.iter().map(|(_, address)| address.clone()).collect()
    }

    /// Drops every swarm connection, as a daemon restart does.
    pub fn disconnect_all(&self) {
        self.lock().connected.clear();
    }

    /// Pin and unpin calls running right now (including those held at the gate).
    pub fn ops_in_flight(&self) -> usize {
        self.ops_in_flight.load(Ordering::SeqCst)
    }

    /// The most pin and unpin calls ever running at once.
    pub fn max_ops_in_flight(&self) -> usize {
        self.max_ops_in_flight.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake IPFS lock")
    }

    fn check_reachable(&self) -> Result<()> {
        if self.lock().unreachable {
            return Err(Error::IpfsUnreachable("fake IPFS daemon is down".into()));
        }
        Ok(())
    }

    /// Runs the slow part of a pin or unpin: counts concurrency, waits at the gate and the delay.
    async fn operate(&self) {
        let running = self.ops_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_ops_in_flight.fetch_max(running, Ordering::SeqCst);
        let gate = self.gate.lock().expect("gate lock").clone();
        if let Some(gate) = gate {
            self.waiting_at_gate.fetch_add(1, Ordering::SeqCst);
            // A closed gate (open_gate) lets everyone through: the error is the signal.
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            self.waiting_at_gate.fetch_sub(1, Ordering::SeqCst);
        }
        let delay = self.lock().op_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.ops_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The CID of `data` stored as a single raw block.
pub fn raw_block_cid(data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    let hash = multihash::Multihash::<64>::wrap(SHA2_256, &digest).expect("a sha2-256 digest fits");
    Cid::new_v1(RAW_CODEC, hash)
}

#[async_trait]
impl IpfsConnector for FakeIpfs {
    async fn id(&self) -> Result<IpfsId> {
        self.check_reachable()?;
        Ok(IpfsId { id: Some(self.peer_id), addresses: vec![self.address.clone()], error: String::new() })
    }

    async fn pin(&self, cid: &Cid, mode: PinMode, _origins: &[Multiaddr]) -> Result<()> {
        self.pin_calls.fetch_add(1, Ordering::SeqCst);
        self.check_reachable()?;
        {
            let mut state = self.lock();
            if let Some(log) = state.pin_log.as_mut() {
                log.push(*cid);
            }
            if state.failures_left > 0 {
                state.failures_left -= 1;
                return Err(Error::Ipfs(state.failure_message.clone()));
            }
        }
        self.operate().await;
        let mut state = self.lock();
        let current = state.pins.entry(CidKey::of(cid)).or_insert(mode);
        // A recursive pin already covers a direct one.
        if mode == PinMode::Recursive {
            *current = PinMode::Recursive;
        }
        Ok(())
    }

    async fn unpin(&self, cid: &Cid) -> Result<()> {
        self.unpin_calls.fetch_add(1, Ordering::SeqCst);
        self.check_reachable()?;
        {
            let mut state = self.lock();
            if state.unpin_failures_left > 0 {
                state.unpin_failures_left -= 1;
                return Err(Error::Ipfs(state.failure_message.clone()));
            }
        }
        self.operate().await;
        self.lock().pins.remove(&CidKey::of(cid));
        Ok(())
    }

    async fn pin_status(&self, cid: &Cid) -> Result<Option<PinMode>> {
        self.check_reachable()?;
        Ok(self.pinned(cid))
    }

    async fn pin_ls(&self) -> Result<HashMap<CidKey, PinMode>> {
        self.pin_ls_calls.fetch_add(1, Ordering::SeqCst);
        self.check_reachable()?;
        Ok(self.lock().pins.clone())
    }

    /// Like Kubo: the address must name the peer (`/p2p/<id>`), dialling oneself fails, and a peer
    /// already connected is a success (the address it was first connected through is kept).
    async fn swarm_connect(&self, address: &Multiaddr) -> Result<()> {
        self.swarm_connect_calls.fetch_add(1, Ordering::SeqCst);
        self.check_reachable()?;
        let peer = address.iter().find_map(|protocol| match protocol {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        let Some(peer) = peer else {
            return Err(Error::Ipfs(format!("invalid peer address {address}: no /p2p/<peer id>")));
        };
        if peer == self.peer_id {
            return Err(Error::Ipfs(format!("connect {peer} failure: dial to self attempted")));
        }
        let mut state = self.lock();
        if !state.connected.iter().any(|(connected, _)| *connected == peer) {
            state.connected.push((peer, address.clone()));
        }
        Ok(())
    }

    async fn swarm_peers(&self) -> Result<Vec<PeerId>> {
        self.check_reachable()?;
        Ok(self.lock().connected.iter().map(|(peer, _)| *peer).collect())
    }

    async fn repo_stat(&self) -> Result<RepoStat> {
        self.check_reachable()?;
        Ok(self.lock().repo_stat)
    }

    async fn resolve(&self, path: &str) -> Result<Cid> {
        self.check_reachable()?;
        let rest = path.strip_prefix("/ipfs/").or_else(|| path.strip_prefix("/ipld/"));
        let first = rest.and_then(|rest| rest.split('/').next()).filter(|s| !s.is_empty());
        let Some(first) = first else {
            return Err(Error::Ipfs(format!("fake IPFS cannot resolve {path:?}: only /ipfs/<cid> paths")));
        };
        Cid::try_from(first).map_err(|e| Error::Ipfs(format!("invalid path {path:?}: {e}")))
    }

    async fn add(&self, request: AddRequest) -> Result<BoxStream<'static, Result<AddedEntry>>> {
        self.check_reachable()?;
        let boundary = multer::parse_boundary(&request.content_type)
            .map_err(|e| Error::BadRequest(format!("add: bad multipart content type: {e}")))?;
        let mut multipart = multer::Multipart::new(request.body, boundary);
        let mut entries = Vec::new();
        let bad_body = |e: multer::Error| Error::BadRequest(format!("add: bad multipart body: {e}"));
        while let Some(field) = multipart.next_field().await.map_err(bad_body)? {
            let is_directory = field.content_type().is_some_and(|m| m.essence_str() == "application/x-directory");
            let name = field.file_name().or(field.name()).unwrap_or_default().to_string();
            let data = field.bytes().await.map_err(bad_body)?;
            if is_directory {
                continue;
            }
            let size = data.len() as u64;
            entries.push(Ok(AddedEntry { name, cid: raw_block_cid(&data), bytes: size, size }));
        }
        Ok(stream::iter(entries).boxed())
    }

    async fn repo_gc(&self) -> Result<Vec<GcKey>> {
        self.check_reachable()?;
        Ok(Vec::new())
    }

    /// Reads the whole archive as the daemon does: its header, then each block, whose sha2-256
    /// hash must match its CID; nothing is kept when any of it is wrong.
    async fn dag_import(&self, archive: ByteStream) -> Result<()> {
        self.check_reachable()?;
        let failed = |e: String| Error::Ipfs(format!("Failed to import DAG: {e}"));
        let reader = tokio_util::io::StreamReader::new(archive);
        let mut reader = iroh_car::CarReader::new(reader).await.map_err(|e| failed(e.to_string()))?;
        let mut blocks = Vec::new();
        while let Some((cid, data)) = reader.next_block().await.map_err(|e| failed(e.to_string()))? {
            let hash = cid.hash();
            if hash.code() == SHA2_256 && hash.digest() != &Sha256::digest(&data)[..] {
                return Err(failed(format!("block {cid} does not match its hash")));
            }
            blocks.push(CidKey::of(&cid));
        }
        self.lock().imported.extend(blocks);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::ipfs::car::tests::{car, chunks};

    fn cid(n: u32) -> Cid {
        raw_block_cid(&n.to_be_bytes())
    }

    #[tokio::test]
    async fn pins_unpins_and_lists_by_content_identity() {
        let ipfs = FakeIpfs::new();
        let v1 = cid(1);
        ipfs.pin(&v1, PinMode::Direct, &[]).await.unwrap();
        ipfs.pin(&v1, PinMode::Recursive, &[]).await.unwrap();
        ipfs.pin(&v1, PinMode::Direct, &[]).await.unwrap();
        assert_eq!(ipfs.pin_status(&v1).await.unwrap(), Some(PinMode::Recursive));
        let listed = ipfs.pin_ls().await.unwrap();
        assert_eq!(listed.get(&CidKey::of(&v1)), Some(&PinMode::Recursive));
        ipfs.unpin(&v1).await.unwrap();
        ipfs.unpin(&v1).await.unwrap();
        assert_eq!(ipfs.pin_status(&v1).await.unwrap(), None);
        assert_eq!((ipfs.pin_calls(), ipfs.unpin_calls(), ipfs.pin_ls_calls()), (3, 2, 1));
    }

    #[tokio::test]
    async fn unreachable_fails_every_call_until_reachable() {
        let ipfs = FakeIpfs::new();
        ipfs.set_unreachable(true);
        assert!(matches!(ipfs.id().await, Err(Error::IpfsUnreachable(_))));
        assert!(matches!(ipfs.pin(&cid(1), PinMode::Recursive, &[]).await, Err(Error::IpfsUnreachable(_))));
        assert!(matches!(ipfs.pin_ls().await, Err(Error::IpfsUnreachable(_))));
        ipfs.set_unreachable(false);
        let id = ipfs.id().await.unwrap();
        assert_eq!(id.id, Some(ipfs.peer_id()));
        assert!(id.addresses[0].to_string().starts_with("/ip4/127.0.0.1/"));
    }

    #[tokio::test]
    async fn fails_exactly_the_next_pins() {
        let ipfs = FakeIpfs::new();
        ipfs.fail_next_pins(2, "boom");
        for _ in 0..2 {
            let err = ipfs.pin(&cid(1), PinMode::Recursive, &[]).await.unwrap_err();
            assert_eq!(err.to_string(), "IPFS error: boom");
        }
        ipfs.pin(&cid(1), PinMode::Recursive, &[]).await.unwrap();
        assert_eq!(ipfs.pinned(&cid(1)), Some(PinMode::Recursive));
    }

    #[tokio::test]
    async fn gate_holds_ops_until_released() {
        let ipfs = Arc::new(FakeIpfs::new());
        ipfs.hold_ops();
        let tasks: Vec<_> = (0..3)
            .map(|n| {
                let ipfs = ipfs.clone();
                tokio::spawn(async move { ipfs.pin(&cid(n), PinMode::Recursive, &[]).await })
            })
            .collect();
        while ipfs.waiting_at_gate() < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(ipfs.pin_count(), 0);
        ipfs.release_ops(1);
        while ipfs.pin_count() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(ipfs.waiting_at_gate(), 2);
        ipfs.open_gate();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(ipfs.pin_count(), 3);
        assert_eq!(ipfs.max_ops_in_flight(), 3);
        assert_eq!(ipfs.ops_in_flight(), 0);
    }

    #[tokio::test]
    async fn swarm_connect_records_peers_once_and_swarm_peers_lists_them() {
        let ipfs = FakeIpfs::new();
        let (a, b) = (PeerId::random(), PeerId::random());
        let at =
            |port: u16, peer: PeerId| -> Multiaddr { format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}").parse().unwrap() };
        assert!(ipfs.swarm_peers().await.unwrap().is_empty());
        ipfs.swarm_connect(&at(4001, a)).await.unwrap();
        ipfs.swarm_connect(&at(4002, b)).await.unwrap();
        // Already connected: a success, even through another address.
        ipfs.swarm_connect(&at(4999, a)).await.unwrap();
        assert_eq!(ipfs.swarm_peers().await.unwrap(), vec![a, b]);
        assert_eq!(ipfs.connected_addresses(), vec![at(4001, a), at(4002, b)]);

        let no_peer: Multiaddr = "/ip4/127.0.0.1/tcp/4003".parse().unwrap();
        assert!(matches!(ipfs.swarm_connect(&no_peer).await, Err(Error::Ipfs(_))));
        assert!(matches!(ipfs.swarm_connect(&at(4001, ipfs.peer_id())).await, Err(Error::Ipfs(_))));

        ipfs.set_unreachable(true);
        let c = PeerId::random();
        assert!(matches!(ipfs.swarm_connect(&at(4004, c)).await, Err(Error::IpfsUnreachable(_))));
        assert!(matches!(ipfs.swarm_peers().await, Err(Error::IpfsUnreachable(_))));
        ipfs.set_unreachable(false);
        assert_eq!(ipfs.swarm_peers().await.unwrap(), vec![a, b]);
        assert_eq!(ipfs.swarm_connect_calls(), 6);

        ipfs.disconnect_all();
        assert!(ipfs.swarm_peers().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn resolves_ipfs_paths_only() {
        let ipfs = FakeIpfs::new();
        let c = cid(7);
        assert_eq!(ipfs.resolve(&format!("/ipfs/{c}")).await.unwrap(), c);
        assert_eq!(ipfs.resolve(&format!("/ipfs/{c}/a/b")).await.unwrap(), c);
        assert!(ipfs.resolve("/ipns/example.org").await.is_err());
        assert!(ipfs.resolve("/ipfs/").await.is_err());
    }

    #[tokio::test]
    async fn add_hashes_each_file_as_a_raw_block() {
        let ipfs = FakeIpfs::new();
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
                    Content-Type: application/octet-stream\r\n\r\nhello\r\n--XyZ--\r\n";
        let request = AddRequest {
            content_type: "multipart/form-data; boundary=XyZ".into(),
            body: stream::iter([Ok(Bytes::from(body))]).boxed(),
            params: vec![],
        };
        let entries: Vec<_> = ipfs.add(request).await.unwrap().collect().await;
        let entry = entries.into_iter().next().unwrap().unwrap();
        assert_eq!(entry.name, "a.txt");
        assert_eq!((entry.bytes, entry.size), (5, 5));
        // sha2-256 of "hello" as a raw CIDv1 (what `ipfs block put --format=raw` gives).
        assert_eq!(entry.cid.to_string(), "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq");
        assert_eq!(ipfs.pin_count(), 0);
    }

    #[tokio::test]
    async fn dag_import_checks_every_block_against_its_cid() {
        let ipfs = FakeIpfs::new();
        let (a, b) = (b"block a".to_vec(), b"block b".to_vec());
        let (cid_a, cid_b) = (raw_block_cid(&a), raw_block_cid(&b));
        ipfs.dag_import(chunks(car(vec![cid_a], &[(cid_a, a.clone()), (cid_b, b)]).await, 7)).await.unwrap();
        assert!(ipfs.has_block(&cid_a) && ipfs.has_block(&cid_b));
        assert_eq!(ipfs.pin_status(&cid_a).await.unwrap(), None, "roots are not pinned");

        let forged = raw_block_cid(b"something else");
        let err = ipfs.dag_import(chunks(car(vec![forged], &[(forged, a)]).await, 7)).await.unwrap_err();
        assert!(err.to_string().contains("does not match its hash"), "{err}");
        assert!(!ipfs.has_block(&forged));
    }
}
