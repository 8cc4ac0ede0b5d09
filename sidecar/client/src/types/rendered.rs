//! Text of peer IDs and multiaddrs, remembered per thread while serializing.
//!
//! A status listing repeats the same few IDs and addresses (this peer's, its daemon's) on every one
//! of possibly millions of lines, and their base58 text costs more to produce than the rest of the
//! line. Serializers ask here instead of formatting each time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

/// Distinct values remembered per kind and thread; past this the memory starts over.
const CAPACITY: usize = 64;

thread_local! {
    static PEER_IDS: RefCell<HashMap<PeerId, Rc<str>>> = RefCell::new(HashMap::new());
    static ADDRESSES: RefCell<HashMap<Multiaddr, Rc<str>>> = RefCell::new(HashMap::new());
}

pub fn peer_id(id: &PeerId) -> Rc<str> {
    PEER_IDS.with(|memo| remembered(&mut memo.borrow_mut(), id))
}

pub fn multiaddr(addr: &Multiaddr) -> Rc<str> {
    ADDRESSES.with(|memo| remembered(&mut memo.borrow_mut(), addr))
}

fn remembered<K: Hash + Eq + Clone + ToString>(memo: &mut HashMap<K, Rc<str>>, key: &K) -> Rc<str> {
    if let Some(text) = memo.get(key) {
        return text.clone();
    }
    if memo.len() >= CAPACITY {
        memo.clear();
    }
    let text: Rc<str> = key.to_string().into();
    memo.insert(key.clone(), text.clone());
    text
}

/// Serde for a list of multiaddrs as strings, through the memo (reads `null` as empty).
pub(crate) mod multiaddrs {
    use multiaddr::Multiaddr;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addrs: &[Multiaddr], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(addrs.len()))?;
        for addr in addrs {
            seq.serialize_element(&*super::multiaddr(addr))?;
        }
        seq.end()
    }

    /// Reads strings whatever the format: `Multiaddr`'s own serde expects bytes from binary
    /// formats (the CBOR of peer-to-peer calls), but these were written as text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Multiaddr>, D::Error> {
        // JSON may carry `null`; binary formats always carry the list that was written.
        let texts = if d.is_human_readable() {
            Option::<Vec<String>>::deserialize(d)?.unwrap_or_default()
        } else {
            Vec::<String>::deserialize(d)?
        };
        texts.iter().map(|text| text.parse().map_err(serde::de::Error::custom)).collect()
    }
}

/// Serde for a list of peer IDs (a pin's allocations): in human-readable formats base58 text
/// through the memo, `null` read as empty; in binary formats (the stored pinset, peer-to-peer
/// calls) exactly as `PeerId`'s own serde writes them.
pub(crate) mod peer_ids {
    use libp2p_identity::PeerId;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(ids: &[PeerId], s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return ids.serialize(s);
        }
        let mut seq = s.serialize_seq(Some(ids.len()))?;
        for id in ids {
            seq.serialize_element(&*super::peer_id(id))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PeerId>, D::Error> {
        if d.is_human_readable() {
            Ok(Option::<Vec<PeerId>>::deserialize(d)?.unwrap_or_default())
        } else {
            Vec::<PeerId>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_are_text_in_json_and_peer_id_serde_in_binary_formats() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Ids(#[serde(with = "peer_ids")] Vec<PeerId>);
        #[derive(serde::Serialize)]
        struct Plain(Vec<PeerId>);
        let id = PeerId::random();
        let ids = Ids(vec![id, id]);
        assert_eq!(serde_json::to_value(&ids).unwrap(), serde_json::json!([id.to_base58(), id.to_base58()]));
        assert_eq!(serde_json::from_str::<Ids>("null").unwrap(), Ids(vec![]));
        let bytes = postcard::to_allocvec(&ids).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&Plain(vec![id, id])).unwrap(), "stored pins read as before");
        assert_eq!(postcard::from_bytes::<Ids>(&bytes).unwrap(), ids);
    }

    #[test]
    fn multiaddrs_read_back_from_binary_formats() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Addrs(#[serde(with = "multiaddrs")] Vec<Multiaddr>);
        let addrs = Addrs(vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()]);
        let bytes = postcard::to_allocvec(&addrs).unwrap();
        assert_eq!(postcard::from_bytes::<Addrs>(&bytes).unwrap(), addrs);
        assert_eq!(serde_json::from_str::<Addrs>(r#"["/ip4/127.0.0.1/tcp/4001"]"#).unwrap(), addrs);
    }

    #[test]
    fn remembered_text_is_the_display_text() {
        let id = PeerId::random();
        assert_eq!(&*peer_id(&id), id.to_string());
        assert_eq!(&*peer_id(&id), id.to_string());
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{id}").parse().unwrap();
        assert_eq!(&*multiaddr(&addr), addr.to_string());
        for _ in 0..2 * CAPACITY {
            let other = PeerId::random();
            assert_eq!(&*peer_id(&other), other.to_string());
        }
    }
}
