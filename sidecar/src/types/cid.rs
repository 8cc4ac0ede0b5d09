//! CIDs as the cluster handles them: parsed once at the edge, compared by content.
//!
//! Daemons may answer with a CID in another base or version than the one we sent (a CIDv1 comes back
//! in base58btc, a CIDv0 as a CIDv1...). Two CIDs name the same pin when their multihash and codec
//! agree, so every map and table is keyed by [`CidKey`], never by the string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

pub use cid::Cid;

/// Parses a CID the way the reference does, with its error text (`error decoding Cid: ...`).
pub fn parse_cid(text: &str) -> Result<Cid, Error> {
    Cid::try_from(text.trim()).map_err(|e| Error::InvalidCid(format!("error decoding Cid: {e}")))
}

/// The identity of a CID's content: codec and multihash, independent of version and base.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidKey(Box<[u8]>);

impl CidKey {
    pub fn of(cid: &Cid) -> Self {
        let mut bytes = Vec::with_capacity(10 + cid.hash().encoded_len());
        write_varint(&mut bytes, cid.codec());
        cid.hash().write(&mut bytes).expect("writing to a Vec cannot fail");
        CidKey(bytes.into_boxed_slice())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Rebuilds the key read back from storage; `None` when the bytes are not a key.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (_, rest) = read_varint(bytes)?;
        multihash::Multihash::<64>::from_bytes(rest).ok()?;
        Some(CidKey(bytes.into()))
    }

    /// The CIDv1 this key stands for (used where no original spelling is known).
    pub fn to_cid(&self) -> Cid {
        let (codec, rest) = read_varint(&self.0).expect("a CidKey is well formed");
        let hash = multihash::Multihash::<64>::from_bytes(rest).expect("a CidKey is well formed");
        Cid::new_v1(codec, hash)
    }
}

impl From<&Cid> for CidKey {
    fn from(cid: &Cid) -> Self {
        CidKey::of(cid)
    }
}

/// As bytes: keys travel in Raft log entries and RPCs between peers.
impl Serialize for CidKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for CidKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyBytes;
        impl serde::de::Visitor<'_> for KeyBytes {
            type Value = CidKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of a CID key (codec and multihash)")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<CidKey, E> {
                CidKey::from_bytes(bytes).ok_or_else(|| E::custom("not a CID key"))
            }
        }
        deserializer.deserialize_bytes(KeyBytes)
    }
}

impl fmt::Debug for CidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CidKey({})", self.to_cid())
    }
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Serde for a CID: a string in JSON (as on the wire), raw bytes in binary formats (on disk).
pub mod cid_serde {
    use super::*;

    pub fn serialize<S: Serializer>(cid: &Cid, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(cid)
        } else {
            s.serialize_bytes(&cid.to_bytes())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cid, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Cid::try_from(text.as_str()).map_err(serde::de::Error::custom)
        } else {
            let bytes = serde_bytes_vec(d)?;
            Cid::try_from(bytes.as_slice()).map_err(serde::de::Error::custom)
        }
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("CID bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// Serde for an optional CID: `null` when undefined, as the reference writes it.
pub mod opt_cid_serde {
    use super::*;

    pub fn serialize<S: Serializer>(cid: &Option<Cid>, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wrap<'a>(#[serde(with = "cid_serde")] &'a Cid);
        match cid {
            Some(cid) => s.serialize_some(&Wrap(cid)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cid>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "cid_serde")] Cid);
        if d.is_human_readable() {
            // The reference also writes an undefined CID as "" in places; accept it.
            let text: Option<String> = Option::deserialize(d)?;
            match text.as_deref() {
                None | Some("") => Ok(None),
                Some(text) => Cid::try_from(text).map(Some).map_err(serde::de::Error::custom),
            }
        } else {
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    #[test]
    fn v0_and_v1_of_the_same_content_share_a_key() {
        let v0 = parse_cid(V0).unwrap();
        let v1 = Cid::new_v1(v0.codec(), *v0.hash());
        let v1_base58 = v1.to_string_of_base(cid::multibase::Base::Base58Btc).unwrap();
        assert_ne!(v0.to_string(), v1.to_string());
        assert_eq!(CidKey::of(&v0), CidKey::of(&v1));
        assert_eq!(CidKey::of(&v0), CidKey::of(&parse_cid(&v1_base58).unwrap()));
    }

    #[test]
    fn different_codecs_differ() {
        let v0 = parse_cid(V0).unwrap();
        let raw = Cid::new_v1(0x55, *v0.hash());
        assert_ne!(CidKey::of(&v0), CidKey::of(&raw));
    }

    #[test]
    fn key_round_trips_through_bytes() {
        let key = CidKey::of(&parse_cid(V0).unwrap());
        assert_eq!(CidKey::from_bytes(key.as_bytes()), Some(key.clone()));
        assert_eq!(CidKey::of(&key.to_cid()), key);
        assert_eq!(CidKey::from_bytes(&[0xff]), None);
    }

    #[test]
    fn invalid_cid_has_the_reference_error_text() {
        let err = parse_cid("not-a-cid").unwrap_err().to_string();
        assert!(err.starts_with("error decoding Cid: "), "{err}");
    }
}
