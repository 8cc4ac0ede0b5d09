//! A [`StatusSheet`] written as `GET /pins` lines: the same bytes serde writes for each row's
//! [`GlobalPinInfo`](crate::types::GlobalPinInfo), without building those objects.
//!
//! In a listing of millions, each line carries every member's name, daemon ID and addresses, the
//! same on every line: they are written once per sheet and copied, and only what differs per pin
//! is encoded.

use std::io::Write;

use chrono::{DateTime, Utc};

use crate::cluster::{PeerColumn, StatusSheet};
use crate::protocol::PageStatus;
use crate::types::rendered;
use crate::types::time::{self, GO_ZERO_TIME};
use crate::types::{Pin, StatusFilter};

/// Bytes of a line with three members (a guess to size the buffer, not a limit).
const LINE_GUESS: usize = 1400;

/// The NDJSON lines of the rows `filter` passes.
pub(crate) fn render(sheet: &StatusSheet, filter: &StatusFilter) -> Vec<u8> {
    let heads: Vec<Vec<u8>> = sheet.columns.iter().map(column_head).collect();
    let mut out = Vec::with_capacity(sheet.rows.len() * LINE_GUESS);
    let mut times = Times::default();
    for (row, (cid, pin)) in sheet.rows.iter().enumerate() {
        if !sheet.row_matches(row, filter) {
            continue;
        }
        write!(out, "{{\"cid\":\"{cid}\",\"name\":").expect("writes to memory");
        string(&mut out, pin.as_ref().map_or("", |pin| &pin.name));
        pin_fields(&mut out, pin.as_ref(), &mut times);
        out.extend_from_slice(b",\"peer_map\":{");
        for (i, (column, head)) in sheet.columns.iter().zip(&heads).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(head);
            status_fields(&mut out, &column.page.statuses[row], &mut times);
        }
        out.extend_from_slice(b"}}\n");
    }
    out
}

/// `,"allocations":[..],"origins":[..],"created":"..","metadata":..` of a pin, or of a CID
/// outside the pinset.
fn pin_fields(out: &mut Vec<u8>, pin: Option<&Pin>, times: &mut Times) {
    out.extend_from_slice(b",\"allocations\":[");
    let allocations = pin.map_or(&[][..], |pin| &pin.allocations);
    for (i, peer) in allocations.iter().enumerate() {
        comma(out, i);
        string(out, &rendered::peer_id(peer));
    }
    out.extend_from_slice(b"],\"origins\":[");
    for (i, origin) in pin.map_or(&[][..], |pin| &pin.origins).iter().enumerate() {
        comma(out, i);
        string(out, &origin.to_string());
    }
    out.extend_from_slice(b"],\"created\":\"");
    match pin {
        Some(pin) => out.extend_from_slice(times.text(pin.timestamp).as_bytes()),
        None => out.extend_from_slice(GO_ZERO_TIME.as_bytes()),
    }
    out.extend_from_slice(b"\",\"metadata\":");
    match pin.map(|pin| &pin.metadata).filter(|metadata| !metadata.is_empty()) {
        Some(metadata) => serde_json::to_writer(&mut *out, metadata).expect("writes to memory"),
        None => out.extend_from_slice(b"null"),
    }
}

/// `"<peer>":{"peername":..,"ipfs_peer_id":..,"ipfs_peer_addresses":[..],` : what a member's
/// entries in `peer_map` share.
fn column_head(column: &PeerColumn) -> Vec<u8> {
    let page = &column.page;
    let mut head = Vec::new();
    string(&mut head, &column.peer);
    head.extend_from_slice(b":{\"peername\":");
    string(&mut head, &page.peername);
    head.extend_from_slice(b",\"ipfs_peer_id\":");
    match &page.ipfs_peer_id {
        Some(id) => string(&mut head, &rendered::peer_id(id)),
        None => string(&mut head, ""),
    }
    head.extend_from_slice(b",\"ipfs_peer_addresses\":[");
    for (i, addr) in page.ipfs_peer_addresses.iter().enumerate() {
        comma(&mut head, i);
        string(&mut head, &rendered::multiaddr(addr));
    }
    head.extend_from_slice(b"],");
    head
}

/// `"status":..,"timestamp":..,"error":..,"attempt_count":..,"priority_pin":..}`.
fn status_fields(out: &mut Vec<u8>, status: &PageStatus, times: &mut Times) {
    let PageStatus(tracker_status, _, _, error, attempt_count, priority_pin) = status;
    write!(out, "\"status\":\"{}\",\"timestamp\":\"", tracker_status.as_str()).expect("writes to memory");
    out.extend_from_slice(times.text(status.timestamp()).as_bytes());
    out.extend_from_slice(b"\",\"error\":");
    string(out, error);
    write!(out, ",\"attempt_count\":{attempt_count},\"priority_pin\":{priority_pin}}}").expect("writes to memory");
}

fn comma(out: &mut Vec<u8>, index: usize) {
    if index > 0 {
        out.push(b',');
    }
}

/// A JSON string, escaped as serde_json escapes it.
fn string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("writes to memory");
}

/// The text of the last time written: a pin's creation and the statuses of an idle pin on every
/// member are the same instant.
#[derive(Default)]
struct Times {
    last: Option<DateTime<Utc>>,
    text: String,
}

impl Times {
    fn text(&mut self, at: DateTime<Utc>) -> &str {
        if self.last != Some(at) {
            self.last = Some(at);
            self.text = time::format(&at);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use libp2p_identity::PeerId;

    use super::*;
    use crate::protocol::StatusPage;
    use crate::types::{fixtures, TrackerStatus};

    /// A member with a random peer ID and a daemon at `addrs`.
    fn column(peername: &str, addrs: &[&str], statuses: Vec<PageStatus>) -> PeerColumn {
        let page = StatusPage {
            peername: peername.to_string(),
            ipfs_peer_id: Some(PeerId::random()),
            ipfs_peer_addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            statuses,
        };
        PeerColumn { peer: PeerId::random().to_string(), page }
    }

    fn status(status: TrackerStatus, at: DateTime<Utc>, error: &str, attempts: u32) -> PageStatus {
        PageStatus(status, at.timestamp(), at.timestamp_subsec_nanos(), error.to_string(), attempts, attempts > 0)
    }

    /// Three rows (a plain pin, a pin with everything set, a CID outside the pinset) and three
    /// members (one of them unreachable), in `peer_map` order.
    fn sheet() -> StatusSheet {
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0).unwrap();
        let later = at + chrono::Duration::nanoseconds(1_500_000);
        let plain = fixtures::pin("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG");
        let mut full = fixtures::pin("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy");
        full.name = "quote \" and \\ and \u{1} and é".to_string();
        full.allocations = vec![PeerId::random(), PeerId::random()];
        full.origins = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap(), "/dns4/example.org/tcp/1".parse().unwrap()];
        full.metadata = BTreeMap::from([("z".to_string(), "last".to_string()), ("a\"".to_string(), "\n".to_string())]);
        full.timestamp = later;
        let leaving = fixtures::pin("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n").cid;
        let rows = vec![(plain.cid, Some(plain.clone())), (full.cid, Some(full.clone())), (leaving, None)];
        let one = [
            status(TrackerStatus::Pinned, plain.timestamp, "", 0),
            status(TrackerStatus::PinError, later, "daemon said \"no\"\n", 3),
            status(TrackerStatus::Unpinning, at, "", 1),
        ];
        let two = [
            status(TrackerStatus::Remote, plain.timestamp, "", 0),
            status(TrackerStatus::Pinned, at, "", 0),
            status(TrackerStatus::Unpinned, at, "", 0),
        ];
        let unreachable = PeerColumn {
            peer: PeerId::random().to_string(),
            page: StatusPage::failed(3, "peer unreachable: \"timeout\"".to_string(), later),
        };
        let mut columns = vec![
            column("peer \"one\"", &["/ip4/127.0.0.1/tcp/4001", "/ip6/::1/tcp/4001"], one.to_vec()),
            column("two", &["/ip4/127.0.0.1/tcp/4002"], two.to_vec()),
            unreachable,
        ];
        columns.sort_by(|a, b| a.peer.cmp(&b.peer));
        StatusSheet { rows, columns }
    }

    fn serde_lines(sheet: StatusSheet, filter: &StatusFilter) -> String {
        sheet.into_infos(filter).iter().map(|info| serde_json::to_string(info).unwrap() + "\n").collect()
    }

    #[test]
    fn lines_are_the_bytes_serde_writes_for_each_filter() {
        let sheet = sheet();
        for filter in ["", "pinned", "pin_error", "error", "unpinning,remote", "queued", "sharded"] {
            let filter = StatusFilter::parse(filter).unwrap();
            let rendered = String::from_utf8(render(&sheet, &filter)).unwrap();
            assert_eq!(rendered, serde_lines(sheet.clone(), &filter), "filter {filter:?}");
        }
    }

    #[test]
    fn a_filter_that_passes_nothing_writes_nothing() {
        assert!(render(&sheet(), &StatusFilter::parse("sharded").unwrap()).is_empty());
        assert_eq!(render(&sheet(), &StatusFilter::default()).iter().filter(|b| **b == b'\n').count(), 3);
    }
}
