//! The JSON bodies the daemon answers with, in the forms both Kubo and js-ipfs use.

use std::collections::HashMap;
use std::fmt;

use libp2p_identity::PeerId;
use serde::{de, Deserialize, Deserializer};

use crate::ipfs::{AddedEntry, GcKey};
use crate::types::{Cid, PinMode};
use crate::{Error, Result};

/// `id`.
#[derive(Debug, Deserialize)]
pub(super) struct IdResponse {
    #[serde(rename = "ID")]
    pub(super) id: String,
    #[serde(rename = "Addresses", default)]
    pub(super) addresses: Option<Vec<String>>,
}

/// `swarm/connect`: `{"Strings":["connect <id> success"]}` per address (Kubo and js-ipfs).
#[derive(Debug, Deserialize)]
pub(super) struct SwarmConnectResponse {
    #[serde(rename = "Strings", default)]
    pub(super) strings: Option<Vec<String>>,
}

impl SwarmConnectResponse {
    /// Both daemons report a failed dial with an error status; a `failure` line under a success
    /// status is taken as the error all the same.
    pub(super) fn check(self) -> Result<()> {
        match self.strings.unwrap_or_default().into_iter().find(|line| line.contains("failure")) {
            Some(failure) => Err(Error::Ipfs(failure)),
            None => Ok(()),
        }
    }
}

/// `swarm/peers`: one entry per connection (a daemon may have several to one peer); Kubo answers
/// `{"Peers":null}` when there is none. Only the peer ID matters here.
#[derive(Debug, Deserialize)]
pub(super) struct SwarmPeersResponse {
    #[serde(rename = "Peers", default)]
    pub(super) peers: Option<Vec<SwarmPeer>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SwarmPeer {
    #[serde(rename = "Peer")]
    pub(super) peer: String,
}

impl SwarmPeersResponse {
    /// The connected peer IDs, each once, in the order the daemon listed them.
    pub(super) fn peer_ids(self) -> Result<Vec<PeerId>> {
        let mut ids: Vec<PeerId> = Vec::new();
        for entry in self.peers.unwrap_or_default() {
            let id = entry
                .peer
                .parse::<PeerId>()
                .map_err(|e| Error::Ipfs(format!("swarm/peers answered an invalid peer ID {:?}: {e}", entry.peer)))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

/// One line of `pin/add?progress=true`: `{"Progress":n}` while fetching (Kubo only), then
/// `{"Pins":[...]}`.
#[derive(Debug, Deserialize)]
pub(super) struct PinAddLine {
    #[serde(rename = "Pins", default)]
    pub(super) pins: Option<Vec<String>>,
    #[serde(rename = "Progress", default)]
    pub(super) progress: Option<u64>,
}

/// `pin/ls`: `{"Cid":..,"Type":..}` per line when streamed, or one `{"Keys":{cid:{"Type":..}}}`.
#[derive(Debug, Deserialize)]
pub(super) struct PinLsLine {
    #[serde(rename = "Cid", default)]
    pub(super) cid: Option<String>,
    #[serde(rename = "Type", default)]
    pub(super) pin_type: Option<String>,
    #[serde(rename = "Keys", default)]
    pub(super) keys: Option<HashMap<String, PinLsKey>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct PinLsKey {
    #[serde(rename = "Type")]
    pub(super) pin_type: String,
}

impl PinLsLine {
    /// The `(cid, type)` pairs of this line, whichever form it has.
    pub(super) fn into_pins(self) -> Vec<(String, String)> {
        let streamed = self.cid.map(|cid| (cid, self.pin_type.unwrap_or_default()));
        let listed = self.keys.into_iter().flatten().map(|(cid, key)| (cid, key.pin_type));
        streamed.into_iter().chain(listed).collect()
    }
}

/// The pin mode a `pin/ls` type names; indirect pins (`"indirect through <cid>"`) are not ours.
pub(super) fn pin_mode_of(pin_type: &str) -> Option<PinMode> {
    match pin_type {
        "recursive" => Some(PinMode::Recursive),
        "direct" => Some(PinMode::Direct),
        _ => None,
    }
}

/// `repo/stat`: numbers in Kubo, strings in js-ipfs.
#[derive(Debug, Deserialize)]
pub(super) struct RepoStatResponse {
    #[serde(rename = "RepoSize", deserialize_with = "u64_or_string")]
    pub(super) repo_size: u64,
    #[serde(rename = "StorageMax", deserialize_with = "u64_or_string")]
    pub(super) storage_max: u64,
}

/// `resolve`.
#[derive(Debug, Deserialize)]
pub(super) struct ResolveResponse {
    #[serde(rename = "Path")]
    pub(super) path: String,
}

impl ResolveResponse {
    /// The CID a resolved `/ipfs/<cid>[/...]` path names.
    pub(super) fn cid(&self) -> Result<Cid> {
        let unexpected = || Error::Ipfs(format!("resolve answered an unexpected path: {:?}", self.path));
        let rest = self.path.strip_prefix("/ipfs/").ok_or_else(unexpected)?;
        let first = rest.split('/').next().unwrap_or_default();
        Cid::try_from(first).map_err(|_| unexpected())
    }
}

/// One line of `add`: an imported file or directory (`Hash` set), or a progress report (`Bytes`,
/// no `Hash`). `Size` is a string in Kubo and a number in js-ipfs.
#[derive(Debug, Deserialize)]
pub(super) struct AddLine {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Hash", default)]
    hash: Option<String>,
    #[serde(rename = "Bytes", default, deserialize_with = "opt_u64_or_string")]
    bytes: Option<u64>,
    #[serde(rename = "Size", default, deserialize_with = "opt_u64_or_string")]
    size: Option<u64>,
}

impl AddLine {
    /// The entry this line reports; `None` for progress lines, which name no content yet.
    pub(super) fn into_entry(self) -> Result<Option<AddedEntry>> {
        let Some(hash) = self.hash.filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let cid = Cid::try_from(hash.as_str())
            .map_err(|e| Error::Ipfs(format!("add answered an invalid CID {hash:?}: {e}")))?;
        Ok(Some(AddedEntry { name: self.name, cid, bytes: self.bytes.unwrap_or(0), size: self.size.unwrap_or(0) }))
    }
}

/// One line of `repo/gc`: `{"Key":{"/":cid}}`, or `{"Error":"..."}` with `stream-errors`.
#[derive(Debug, Deserialize)]
pub(super) struct GcLine {
    #[serde(rename = "Key", default)]
    key: Option<GcLineKey>,
    #[serde(rename = "Error", default)]
    error: Option<String>,
}

/// Kubo and js-ipfs write the key as an IPLD link `{"/":cid}`; a bare string is accepted too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GcLineKey {
    Link {
        #[serde(rename = "/")]
        cid: String,
    },
    Text(String),
}

impl GcLine {
    pub(super) fn into_key(self) -> Result<GcKey> {
        let key = match self.key {
            Some(GcLineKey::Link { cid } | GcLineKey::Text(cid)) if !cid.is_empty() => Some(
                Cid::try_from(cid.as_str())
                    .map_err(|e| Error::Ipfs(format!("repo/gc answered an invalid CID {cid:?}: {e}")))?,
            ),
            _ => None,
        };
        Ok(GcKey { key, error: self.error.unwrap_or_default() })
    }
}

fn u64_or_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    d.deserialize_any(U64OrString)
}

fn opt_u64_or_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    d.deserialize_option(OptU64OrString)
}

struct U64OrString;

impl de::Visitor<'_> for U64OrString {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer, as a number or a string")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("negative number: {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<u64, E> {
        // JavaScript numbers such as StorageMax = 2^53-1 may arrive written as floats.
        if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 {
            Ok(v as u64)
        } else {
            Err(E::custom(format!("not a non-negative integer: {v}")))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<u64, E> {
        v.trim().parse().map_err(|_| E::custom(format!("not a non-negative integer: {v:?}")))
    }
}

struct OptU64OrString;

impl<'de> de::Visitor<'de> for OptU64OrString {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an optional non-negative integer, as a number or a string")
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Option<u64>, D::Error> {
        u64_or_string(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ndjson::IPFS_DAEMON;

    fn decode_line<T: serde::de::DeserializeOwned>(line: &[u8]) -> crate::Result<T> {
        crate::ndjson::decode_line(line, IPFS_DAEMON)
    }

    const V0: &str = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";
    const V1_BASE58: &str = "zb2rhcc1wJn2GHDLT2YkmPq5b69cXc2xfRZZmyufbjFUfBkxr";

    #[test]
    fn repo_stat_numbers_or_strings() {
        let kubo: RepoStatResponse = decode_line(br#"{"RepoSize":2561,"StorageMax":10000000000}"#).unwrap();
        let js: RepoStatResponse =
            decode_line(br#"{"NumObjects":"3","RepoSize":"2561","StorageMax":"9007199254740991"}"#).unwrap();
        assert_eq!((kubo.repo_size, kubo.storage_max), (2561, 10_000_000_000));
        assert_eq!((js.repo_size, js.storage_max), (2561, 9_007_199_254_740_991));
        assert!(decode_line::<RepoStatResponse>(br#"{"RepoSize":"lots","StorageMax":1}"#).is_err());
        assert!(decode_line::<RepoStatResponse>(br#"{"RepoSize":-1,"StorageMax":1}"#).is_err());
    }

    #[test]
    fn add_lines_size_as_string_or_number_and_progress_lines_skipped() {
        let kubo: AddLine = decode_line(format!(r#"{{"Name":"f.txt","Hash":"{V0}","Size":"14"}}"#).as_bytes()).unwrap();
        let js: AddLine =
            decode_line(format!(r#"{{"Name":"f.txt","Hash":"{V0}","Size":14,"Mode":"0644"}}"#).as_bytes()).unwrap();
        for line in [kubo, js] {
            let entry = line.into_entry().unwrap().unwrap();
            assert_eq!((entry.name.as_str(), entry.cid.to_string().as_str(), entry.size), ("f.txt", V0, 14));
        }
        let progress: AddLine = decode_line(br#"{"Name":"f.txt","Bytes":262144}"#).unwrap();
        assert!(progress.into_entry().unwrap().is_none());
        let bad: AddLine = decode_line(br#"{"Name":"f","Hash":"nope"}"#).unwrap();
        assert!(matches!(bad.into_entry(), Err(Error::Ipfs(_))));
    }

    #[test]
    fn pin_ls_stream_and_keys_forms() {
        let streamed: PinLsLine = decode_line(format!(r#"{{"Type":"recursive","Cid":"{V0}"}}"#).as_bytes()).unwrap();
        assert_eq!(streamed.into_pins(), vec![(V0.to_string(), "recursive".to_string())]);
        let listed: PinLsLine =
            decode_line(format!(r#"{{"Keys":{{"{V1_BASE58}":{{"Type":"direct"}}}}}}"#).as_bytes()).unwrap();
        assert_eq!(listed.into_pins(), vec![(V1_BASE58.to_string(), "direct".to_string())]);
        assert_eq!(pin_mode_of("recursive"), Some(PinMode::Recursive));
        assert_eq!(pin_mode_of("direct"), Some(PinMode::Direct));
        assert_eq!(pin_mode_of(&format!("indirect through {V0}")), None);
    }

    #[test]
    fn resolve_takes_the_first_segment() {
        let resolved = ResolveResponse { path: format!("/ipfs/{V1_BASE58}") };
        let expected = Cid::try_from(V1_BASE58).unwrap();
        assert_eq!(resolved.cid().unwrap(), expected);
        let with_rest = ResolveResponse { path: format!("/ipfs/{V0}/a/b") };
        assert_eq!(with_rest.cid().unwrap().to_string(), V0);
        assert!(matches!(ResolveResponse { path: "/ipns/k51".into() }.cid(), Err(Error::Ipfs(_))));
    }

    #[test]
    fn swarm_connect_success_and_failure_lines() {
        let ok: SwarmConnectResponse = decode_line(br#"{"Strings":["connect 12D3KooWA success"]}"#).unwrap();
        ok.check().unwrap();
        let bare: SwarmConnectResponse = decode_line(b"{}").unwrap();
        bare.check().unwrap();
        let failed: SwarmConnectResponse =
            decode_line(br#"{"Strings":["connect 12D3KooWA failure: dial refused"]}"#).unwrap();
        assert!(matches!(failed.check(), Err(Error::Ipfs(m)) if m.contains("dial refused")));
    }

    #[test]
    fn swarm_peers_listed_null_or_empty() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let listed: SwarmPeersResponse = decode_line(
            format!(
                r#"{{"Peers":[{{"Addr":"/ip4/127.0.0.1/tcp/4001","Peer":"{a}","Latency":"","Muxer":"","Streams":null}},
                   {{"Addr":"/ip4/10.0.0.2/tcp/4001","Peer":"{b}"}},{{"Addr":"/ip6/::1/tcp/4001","Peer":"{a}"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(listed.peer_ids().unwrap(), vec![a, b], "each peer once, in the daemon's order");
        let none: SwarmPeersResponse = decode_line(br#"{"Peers":null}"#).unwrap();
        assert!(none.peer_ids().unwrap().is_empty());
        let empty: SwarmPeersResponse = decode_line(br#"{"Peers":[]}"#).unwrap();
        assert!(empty.peer_ids().unwrap().is_empty());
        let bad: SwarmPeersResponse =
            decode_line(br#"{"Peers":[{"Addr":"/ip4/1.2.3.4/tcp/1","Peer":"nope"}]}"#).unwrap();
        assert!(matches!(bad.peer_ids(), Err(Error::Ipfs(m)) if m.contains("invalid peer ID")));
    }

    #[test]
    fn gc_lines() {
        let removed: GcLine = decode_line(format!(r#"{{"Key":{{"/":"{V0}"}}}}"#).as_bytes()).unwrap();
        let key = removed.into_key().unwrap();
        assert_eq!(key.key.unwrap().to_string(), V0);
        assert!(key.error.is_empty());
        let failed: GcLine = decode_line(br#"{"Error":"could not remove block"}"#).unwrap();
        assert_eq!(failed.into_key().unwrap(), GcKey { key: None, error: "could not remove block".into() });
        let text: GcLine = decode_line(format!(r#"{{"Key":"{V0}","Error":null}}"#).as_bytes()).unwrap();
        assert_eq!(text.into_key().unwrap().key.unwrap().to_string(), V0);
    }
}
