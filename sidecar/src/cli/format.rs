//! Human output of `cluster-ctl`, line for line as `ipfs-cluster-ctl` prints it.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::types::BandwidthByProtocol;

use crate::types::{
    AddedOutput, Alert, ConnectGraph, ConsensusStatus, GlobalPinInfo, GlobalRepoGc, Id, Metric, Pin, PinMode, PinType,
};

/// `peers consensus`: this peer's role and the leader, then one line per member.
pub fn consensus(status: &ConsensusStatus) -> String {
    let role = serde_json::to_value(status.role).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let leader = status.leader.as_deref().unwrap_or("none known");
    let mut out = format!("{} | {role} | term {} | leader {leader}\n", status.peer_id, status.term);
    if status.joint {
        out.push_str("  > a membership change is in progress (joint configuration)\n");
    }
    for member in &status.members {
        let kind = if member.voter { "voter" } else { "learner" };
        let _ = writeln!(
            out,
            "  - {} | {kind} | node {} | {}",
            member.peer_id,
            member.node_id,
            member.addresses.join(", ")
        );
    }
    out
}

pub fn id(obj: &Id) -> String {
    let id = obj.id.map(|p| p.to_string()).unwrap_or_default();
    if !obj.error.is_empty() {
        return format!("{id} | ERROR: {}\n", obj.error);
    }
    let mut out = format!("{id} | {} | Sees {} other peers\n", obj.peername, obj.cluster_peers.len().saturating_sub(1));
    let mut addrs: Vec<String> = obj.addresses.iter().map(ToString::to_string).collect();
    addrs.sort();
    out.push_str("  > Addresses:\n");
    for a in addrs {
        let _ = writeln!(out, "    - {a}");
    }
    if !obj.ipfs.error.is_empty() {
        let _ = writeln!(out, "  > IPFS ERROR: {}", obj.ipfs.error);
        return out;
    }
    let mut ipfs: Vec<String> = obj.ipfs.addresses.iter().map(ToString::to_string).collect();
    ipfs.sort();
    let _ = writeln!(out, "  > IPFS: {}", obj.ipfs.id.map(|p| p.to_string()).unwrap_or_default());
    for a in ipfs {
        let _ = writeln!(out, "    - {a}");
    }
    out
}

pub fn global_pin_info(obj: &GlobalPinInfo) -> String {
    let mut out = obj.cid.to_string();
    if !obj.name.is_empty() {
        let _ = write!(out, " | {}", obj.name);
    }
    out.push_str(":\n");
    for (peer, info) in &obj.peer_map {
        let who = if info.peername.is_empty() { peer.as_str() } else { info.peername.as_str() };
        let _ = write!(out, "    > {who:<20} : {}", info.status.as_str().to_ascii_uppercase());
        if !info.error.is_empty() {
            let _ = write!(out, ": {}", info.error);
        }
        let _ = writeln!(
            out,
            " | {} | Attempts: {} | Priority: {}",
            crate::types::time::format(&info.timestamp),
            info.attempt_count,
            info.priority_pin
        );
    }
    out
}

pub fn pin(obj: &Pin) -> String {
    let mut kind = obj.pin_type.as_str().to_ascii_uppercase();
    if obj.mode == PinMode::Direct {
        kind.push_str("-DIRECT");
    }
    let mut out = format!("{} | {} | {kind} | ", obj.cid, obj.name);
    if obj.replication_factor_min == -1 && obj.replication_factor_max == -1 && obj.pin_type == PinType::Data {
        out.push_str("Repl. Factor: -1 | Allocations: [everywhere]");
    } else {
        let mut allocs: Vec<String> = obj.allocations.iter().map(ToString::to_string).collect();
        allocs.sort();
        let _ = write!(
            out,
            "Repl. Factor: {}--{} | Allocations: [{}]",
            obj.replication_factor_min,
            obj.replication_factor_max,
            allocs.join(" ")
        );
    }
    let depth = match obj.max_depth {
        0 => "Direct".to_string(),
        -1 => "Recursive".to_string(),
        n => format!("Recursive-{n}"),
    };
    let metadata = if obj.metadata.is_empty() { "no" } else { "yes" };
    let expire = obj.expire_at.map_or("∞".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
    let added = obj.timestamp.format("%Y-%m-%d %H:%M:%S");
    let _ = writeln!(out, " | {depth} | Metadata: {metadata} | Exp: {expire} | Added: {added}");
    out
}

pub fn metric(obj: &Metric, now: DateTime<Utc>) -> String {
    let value = if obj.name == "freespace" && obj.weight > 0 { bytes(obj.weight as u64) } else { obj.value.clone() };
    format!("{} | {}: {value} | Expires in: {}\n", obj.peer, obj.name, relative(unix_nanos(obj.expire), now))
}

pub fn alert(obj: &Alert, now: DateTime<Utc>) -> String {
    format!(
        "{}: {}. Expired at: {}. Triggered at: {}\n",
        obj.metric.peer,
        obj.metric.name,
        relative(unix_nanos(obj.metric.expire), now),
        relative(obj.triggered_at, now)
    )
}

/// The cluster and IPFS connections as a Graphviz digraph (`health graph | dot -Tsvg`).
pub fn graph(obj: &ConnectGraph) -> String {
    let label = |id: &str| obj.id_to_peername.get(id).cloned().unwrap_or_else(|| short(id));
    let mut out = String::from("digraph cluster {\n");
    let mut peers: Vec<&String> = obj.cluster_links.keys().chain(obj.id_to_peername.keys()).collect();
    peers.sort();
    peers.dedup();
    for peer in &peers {
        let style = if *peer == &obj.cluster_id { "filled" } else { "solid" };
        let _ = writeln!(out, "  \"{peer}\" [label=\"{}\" shape=box style={style}]", label(peer));
    }
    for (peer, ipfs) in &obj.cluster_to_ipfs {
        let _ = writeln!(out, "  \"{ipfs}\" [label=\"IPFS {}\" shape=ellipse]", short(ipfs));
        let _ = writeln!(out, "  \"{peer}\" -> \"{ipfs}\" [style=dashed]");
    }
    for (from, tos) in obj.cluster_links.iter().chain(obj.ipfs_links.iter()) {
        for to in tos {
            let _ = writeln!(out, "  \"{from}\" -> \"{to}\"");
        }
    }
    out.push_str("}\n");
    out
}

fn short(id: &str) -> String {
    let tail: String = id.chars().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}

fn unix_nanos(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}

/// `add`: `added <cid> <name>`, or only the CID when quiet.
pub fn added(obj: &AddedOutput, quiet: bool) -> String {
    let cid = obj.cid.map(|c| c.to_string()).unwrap_or_default();
    if quiet {
        format!("{cid}\n")
    } else {
        format!("added {cid} {}\n", obj.name)
    }
}

/// `health bandwidth`: one line per protocol, sorted.
pub fn bandwidth(obj: &BandwidthByProtocol) -> String {
    obj.iter()
        .map(|(protocol, bw)| {
            format!(
                "{protocol:>25}: In: {:>7}. Out: {:>7}. RateIn: {:.2}B/s. RateOut: {:.2}B/s\n",
                bytes(bw.total_in),
                bytes(bw.total_out),
                bw.rate_in,
                bw.rate_out
            )
        })
        .collect()
}

/// `ipfs gc`: per peer (by name when it has one, sorted by ID), the keys it removed.
pub fn repo_gc(obj: &GlobalRepoGc) -> String {
    let mut out = String::new();
    for (peer, gc) in &obj.peer_map {
        let who = if gc.peername.is_empty() { peer.as_str() } else { gc.peername.as_str() };
        if gc.error.is_empty() {
            let _ = writeln!(out, "{who:<15}");
        } else {
            let _ = writeln!(out, "{who:<15} | ERROR: {}", gc.error);
        }
        out.push_str("  > CIDs:\n");
        for key in &gc.keys {
            if !key.error.is_empty() {
                let _ = writeln!(out, "    - ERROR: {}", key.error);
            } else if let Some(cid) = &key.key {
                let _ = writeln!(out, "    - {cid}");
            }
        }
    }
    out
}

/// Bytes in SI units, as go-humanize writes them (`1.1 GB`, `25 GB`, `512 B`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let exp = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let value = (n as f64 / 1000f64.powi(exp as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exp])
    } else {
        format!("{value:.0} {}", UNITS[exp])
    }
}

/// `3 minutes from now`, `1 hour ago`: go-humanize's relative time, coarsely.
pub fn relative(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (then - now).num_seconds();
    let (amount, suffix) = if secs >= 0 { (secs, "from now") } else { (-secs, "ago") };
    let text = match amount {
        0 => return "now".to_string(),
        1 => "1 second".to_string(),
        2..=59 => format!("{amount} seconds"),
        60..=119 => "1 minute".to_string(),
        120..=3599 => format!("{} minutes", amount / 60),
        3600..=7199 => "1 hour".to_string(),
        7200..=86_399 => format!("{} hours", amount / 3600),
        86_400..=172_799 => "1 day".to_string(),
        _ => format!("{} days", amount / 86_400),
    };
    format!("{text} {suffix}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::types::{parse_cid, IpfsId, PinInfoShort, RepoGc, RepoGcKey, TrackerStatus};

    const CID: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
    const PEER_A: &str = "12D3KooWD3bfmNbuuuVCYwkjnFt3ukm3qaB3hDED3peHHXawvRAi";
    const PEER_B: &str = "12D3KooWKRyzVWW6ChFjQjK4miCty85Niy48tpPV95XdKu1BcvMA";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    fn a_pin() -> Pin {
        serde_json::from_value(serde_json::json!({
            "replication_factor_min": 2, "replication_factor_max": 3, "name": "site", "mode": "recursive",
            "shard_size": 0, "user_allocations": null, "expire_at": "0001-01-01T00:00:00Z",
            "metadata": {"owner": "me"}, "pin_update": null, "origins": [], "cid": CID, "type": "pin",
            "allocations": [PEER_B, PEER_A], "max_depth": -1, "reference": null,
            "timestamp": "2025-05-09T10:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn pin_line() {
        assert_eq!(
            pin(&a_pin()),
            format!("{CID} | site | PIN | Repl. Factor: 2--3 | Allocations: [{PEER_A} {PEER_B}] | Recursive | Metadata: yes | Exp: ∞ | Added: 2025-05-09 10:00:00\n")
        );
        let mut everywhere = a_pin();
        (everywhere.replication_factor_min, everywhere.replication_factor_max) = (-1, -1);
        everywhere.mode = PinMode::Direct;
        everywhere.max_depth = 0;
        everywhere.metadata.clear();
        everywhere.expire_at = Some(at("2026-01-02T03:04:05Z"));
        assert_eq!(
            pin(&everywhere),
            format!("{CID} | site | PIN-DIRECT | Repl. Factor: -1 | Allocations: [everywhere] | Direct | Metadata: no | Exp: 2026-01-02 03:04:05 | Added: 2025-05-09 10:00:00\n")
        );
    }

    #[test]
    fn status_block() {
        let info = |peername: &str, status, error: &str| PinInfoShort {
            peername: peername.into(),
            ipfs_peer_id: None,
            ipfs_peer_addresses: vec![],
            status,
            timestamp: at("2025-05-09T10:00:01Z"),
            error: error.into(),
            attempt_count: 2,
            priority_pin: false,
        };
        let gpi = GlobalPinInfo {
            cid: parse_cid(CID).unwrap(),
            name: "site".into(),
            allocations: vec![],
            origins: vec![],
            created: None,
            metadata: None,
            peer_map: BTreeMap::from([
                (PEER_A.to_string(), info("cluster-0", TrackerStatus::Pinned, "")),
                (PEER_B.to_string(), info("", TrackerStatus::PinError, "context deadline exceeded")),
            ]),
        };
        assert_eq!(
            global_pin_info(&gpi),
            format!(
                "{CID} | site:\n    > cluster-0            : PINNED | 2025-05-09T10:00:01Z | Attempts: 2 | Priority: false\n    > {PEER_B} : PIN_ERROR: context deadline exceeded | 2025-05-09T10:00:01Z | Attempts: 2 | Priority: false\n"
            )
        );
    }

    #[test]
    fn id_block() {
        let obj = Id {
            id: Some(PEER_A.parse().unwrap()),
            addresses: vec!["/ip4/10.0.0.5/tcp/9096".parse().unwrap()],
            cluster_peers: vec![PEER_A.parse().unwrap(), PEER_B.parse().unwrap()],
            cluster_peers_addresses: vec![],
            version: "1.1.6".into(),
            commit: String::new(),
            rpc_protocol_version: String::new(),
            error: String::new(),
            ipfs: IpfsId { id: Some(PEER_B.parse().unwrap()), addresses: vec![], error: String::new() },
            peername: "cluster-0".into(),
            sidecar_version: String::new(),
        };
        assert_eq!(
            id(&obj),
            format!("{PEER_A} | cluster-0 | Sees 1 other peers\n  > Addresses:\n    - /ip4/10.0.0.5/tcp/9096\n  > IPFS: {PEER_B}\n")
        );
        let down = Id { error: "dial backoff".into(), ..obj };
        assert_eq!(id(&down), format!("{PEER_A} | ERROR: dial backoff\n"));
    }

    #[test]
    fn metrics_and_alerts() {
        let now = Utc.with_ymd_and_hms(2025, 5, 9, 10, 0, 0).unwrap();
        let m = Metric {
            name: "freespace".into(),
            peer: PEER_A.into(),
            value: "1073741824".into(),
            expire: (now + chrono::Duration::seconds(30)).timestamp_nanos_opt().unwrap(),
            valid: true,
            weight: 1_073_741_824,
            partitionable: false,
            received_at: 0,
        };
        assert_eq!(metric(&m, now), format!("{PEER_A} | freespace: 1.1 GB | Expires in: 30 seconds from now\n"));
        let a = Alert { metric: Metric { name: "ping".into(), ..m }, triggered_at: now - chrono::Duration::minutes(3) };
        assert_eq!(
            alert(&a, now),
            format!("{PEER_A}: ping. Expired at: 30 seconds from now. Triggered at: 3 minutes ago\n")
        );
    }

    #[test]
    fn added_and_gc_lines() {
        let out = AddedOutput {
            name: "a.txt".into(),
            cid: Some(parse_cid(CID).unwrap()),
            bytes: 3,
            size: 11,
            allocations: None,
        };
        assert_eq!(added(&out, false), format!("added {CID} a.txt\n"));
        assert_eq!(added(&out, true), format!("{CID}\n"));
        let gc = GlobalRepoGc {
            peer_map: BTreeMap::from([
                (
                    PEER_A.to_string(),
                    RepoGc {
                        peer: PEER_A.into(),
                        peername: "cluster-0".into(),
                        keys: vec![
                            RepoGcKey { key: Some(parse_cid(CID).unwrap()), error: String::new() },
                            RepoGcKey { key: None, error: "busy".into() },
                        ],
                        error: String::new(),
                    },
                ),
                (
                    PEER_B.to_string(),
                    RepoGc { peer: PEER_B.into(), peername: String::new(), keys: vec![], error: "down".into() },
                ),
            ]),
        };
        assert_eq!(
            repo_gc(&gc),
            format!("cluster-0      \n  > CIDs:\n    - {CID}\n    - ERROR: busy\n{PEER_B} | ERROR: down\n  > CIDs:\n")
        );
    }

    #[test]
    fn bandwidth_lines() {
        let bw = crate::types::Bandwidth { total_in: 1500, total_out: 5, rate_in: 12.345, rate_out: 0.0 };
        let by_protocol = BandwidthByProtocol::from([("/cluster-sidecar/rpc/1.0.0".to_string(), bw)]);
        assert_eq!(
            bandwidth(&by_protocol),
            "/cluster-sidecar/rpc/1.0.0: In:  1.5 kB. Out:     5 B. RateIn: 12.35B/s. RateOut: 0.00B/s\n"
        );
    }

    #[test]
    fn humanized_units() {
        assert_eq!(bytes(5), "5 B");
        assert_eq!(bytes(1500), "1.5 kB");
        assert_eq!(bytes(25_000_000_000), "25 GB");
        let now = Utc::now();
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(now + chrono::Duration::hours(5), now), "5 hours from now");
        assert_eq!(relative(now - chrono::Duration::days(3), now), "3 days ago");
    }

    #[test]
    fn graph_is_dot() {
        let g = ConnectGraph {
            cluster_id: PEER_A.into(),
            id_to_peername: BTreeMap::from([(PEER_A.into(), "cluster-0".into())]),
            cluster_links: BTreeMap::from([(PEER_A.into(), vec![PEER_B.into()])]),
            cluster_to_ipfs: BTreeMap::from([(PEER_A.into(), "12D3KooWipfs".into())]),
            ..Default::default()
        };
        let dot = graph(&g);
        assert!(dot.starts_with("digraph cluster {\n") && dot.ends_with("}\n"), "{dot}");
        assert!(dot.contains(&format!("\"{PEER_A}\" -> \"{PEER_B}\"")), "{dot}");
        assert!(dot.contains("label=\"cluster-0\" shape=box style=filled"), "{dot}");
        assert!(dot.contains(&format!("\"{PEER_A}\" -> \"12D3KooWipfs\" [style=dashed]")), "{dot}");
    }
}
