//! CIDs as the cluster handles them: parsed once at the edge, compared by content.
//!
//! Daemons may answer with a CID in another base or version than the one we sent (a CIDv1 comes back
//! in base58btc, a CIDv0 as a CIDv1...). Two CIDs name the same pin when their multihash and codec
//! agree, so every map and table is keyed by [`CidKey`], never by the string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

pub use cid::Cid;

/// The most bytes a CID with a digest of at most 64 bytes takes: its version (1 byte), codec and
/// hash function (varints of up to 10 bytes for a u64 each), the digest's length (1 byte) and the
/// digest.
const MAX_CID_BYTES: usize = 1 + 10 + 10 + 1 + 64;

/// The longest text such a CID can be written as: base2, 8 characters a byte after the prefix.
/// Longer text is refused before it is decoded, which for base58, base36 or base10 takes time
/// quadratic in its length.
pub const MAX_CID_TEXT: usize = 1 + 8 * MAX_CID_BYTES;

/// Parses a CID the way the reference does, with its error text (`error decoding Cid: ...`).
pub fn parse_cid(text: &str) -> Result<Cid, Error> {
    decode_cid(text.trim()).map_err(|e| Error::InvalidCid(format!("error decoding Cid: {e}")))
}

/// Decodes a CID's text as go-cid does: bounded in length, and a base32 CID in one case, the one
/// its multibase prefix names (`b` lower case, `B` upper case), where the multibase crate would
/// take any mix.
fn decode_cid(text: &str) -> Result<Cid, String> {
    if text.len() > MAX_CID_TEXT {
        return Err(format!("{} bytes is longer than any CID ({MAX_CID_TEXT} at most)", text.len()));
    }
    if let Some(mixed) = mixed_case_base32(text) {
        return Err(mixed);
    }
    Cid::try_from(text).map_err(|e| e.to_string())
}

/// Why `text` is not base32 in the case its prefix names; `None` when it is, or is not base32.
fn mixed_case_base32(text: &str) -> Option<String> {
    let mut chars = text.chars();
    let prefix = chars.next()?;
    let body = chars.as_str();
    let wrong_case = match prefix {
        'b' | 'c' | 'v' | 't' => body.bytes().any(|b| b.is_ascii_uppercase()),
        'B' | 'C' | 'V' | 'T' => body.bytes().any(|b| b.is_ascii_lowercase()),
        _ => false,
    };
    let case = if prefix.is_ascii_lowercase() { "lower" } else { "upper" };
    wrong_case.then(|| format!("multibase prefix {prefix:?} is {case}-case base32, but the CID mixes cases"))
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
            decode_cid(&text).map_err(serde::de::Error::custom)
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
                Some(text) => decode_cid(text).map(Some).map_err(serde::de::Error::custom),
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

    /// The longest CID there can be: the largest codec and hash function codes, a 64-byte digest.
    fn longest_cid() -> Cid {
        Cid::new_v1(u64::MAX, multihash::Multihash::<64>::wrap(u64::MAX, &[0xff; 64]).unwrap())
    }

    #[test]
    fn every_base_of_the_longest_cid_is_within_the_bound() {
        use cid::multibase::Base;
        let cid = longest_cid();
        assert_eq!(cid.to_bytes().len(), MAX_CID_BYTES);
        let bases = [
            Base::Base2,
            Base::Base8,
            Base::Base10,
            Base::Base16Lower,
            Base::Base16Upper,
            Base::Base32Lower,
            Base::Base32Upper,
            Base::Base32PadLower,
            Base::Base32PadUpper,
            Base::Base32HexLower,
            Base::Base32HexUpper,
            Base::Base32HexPadLower,
            Base::Base32HexPadUpper,
            Base::Base32Z,
            Base::Base36Lower,
            Base::Base36Upper,
            Base::Base45,
            Base::Base58Flickr,
            Base::Base58Btc,
            Base::Base64,
            Base::Base64Pad,
            Base::Base64Url,
            Base::Base64UrlPad,
            Base::Base256Emoji,
        ];
        let longest = bases.iter().map(|base| cid.to_string_of_base(*base).unwrap()).max_by_key(String::len);
        let longest = longest.unwrap();
        assert_eq!(longest.len(), MAX_CID_TEXT, "base2 is the longest: {longest}");
        assert_eq!(parse_cid(&longest).unwrap(), cid);
    }

    #[test]
    fn text_longer_than_any_cid_is_refused_before_decoding() {
        for text in [format!("z{}", "1".repeat(60_000)), "Q".repeat(MAX_CID_TEXT + 1)] {
            let err = parse_cid(&text).unwrap_err();
            assert!(matches!(err, Error::InvalidCid(_)), "{err}");
            assert!(err.to_string().starts_with("error decoding Cid: "), "{err}");
            assert!(err.to_string().contains("longer than any CID"), "{err}");
        }
    }

    #[test]
    fn base32_is_one_case_the_one_its_prefix_names() {
        let lower = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        let upper = "BAFYBEIGDYRZT5SFP7UDM7HU76UH7Y26NF3EFUYLQABF3OCLGTQY55FBZDI";
        let cases: &[(&str, bool)] = &[
            (lower, true),
            (upper, true),
            ("bafyBEIgdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", false),
            ("bAFYBEIGDYRZT5SFP7UDM7HU76UH7Y26NF3EFUYLQABF3OCLGTQY55FBZDI", false),
            ("BAFYBEIGDYRZT5SFP7UDM7HU76UH7Y26NF3EFUYLQABF3OCLGTQY55FBZDi", false),
            ("Bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", false),
            // Base58 and base16 are not base32: their own rules apply.
            (V0, true),
            ("f01701220c3c4733ec8affd06cf9e9ff50ffc6bcd2ec85a6170004bb709669c31de94391a", true),
            ("F01701220C3C4733EC8AFFD06CF9E9FF50FFC6BCD2EC85A6170004BB709669C31DE94391A", true),
        ];
        for (text, accepted) in cases {
            let got = parse_cid(text);
            assert_eq!(got.is_ok(), *accepted, "{text}: {got:?}");
            if let Err(err) = got {
                assert!(err.to_string().starts_with("error decoding Cid: "), "{err}");
            }
        }
        assert_eq!(CidKey::of(&parse_cid(lower).unwrap()), CidKey::of(&parse_cid(upper).unwrap()));
    }

    #[test]
    fn invalid_cid_has_the_reference_error_text() {
        let err = parse_cid("not-a-cid").unwrap_err().to_string();
        assert!(err.starts_with("error decoding Cid: "), "{err}");
    }
}
