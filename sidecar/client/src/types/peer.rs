//! Peer identity objects: `ID` (`GET /id`, `GET /peers`) and the IPFS daemon's identity inside it.

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use super::cid::parse_cid;
use super::pin::null_as_empty;
use super::status::opt_peer_id;
use crate::Error;

/// The REST API version we are wire-compatible with; clients check it.
pub const COMPATIBLE_VERSION: &str = "1.1.6";
pub const RPC_PROTOCOL_VERSION: &str = "/ipfscluster/1.0/rpc";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpfsId {
    #[serde(default, with = "opt_peer_id")]
    pub id: Option<PeerId>,
    #[serde(default, with = "null_as_empty")]
    pub addresses: Vec<Multiaddr>,
    #[serde(default)]
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Id {
    #[serde(with = "opt_peer_id")]
    pub id: Option<PeerId>,
    #[serde(default, with = "null_as_empty")]
    pub addresses: Vec<Multiaddr>,
    #[serde(default, with = "null_as_empty")]
    pub cluster_peers: Vec<PeerId>,
    #[serde(default, with = "null_as_empty")]
    pub cluster_peers_addresses: Vec<Multiaddr>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub rpc_protocol_version: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub ipfs: IpfsId,
    #[serde(default)]
    pub peername: String,
    /// Ours, beyond the reference: this implementation's own version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sidecar_version: String,
}

/// The multicodec of a peer ID written as a CID.
const LIBP2P_KEY_CODEC: u64 = 0x72;

/// Longer than any peer ID's text. The longest is a key inlined with the identity hash (at most 42
/// bytes, so a 44-byte multihash: ed25519 keys take 38) written as a CIDv1 (46 bytes), in base16:
/// 93 characters. The rest are shorter: base58 ed25519 `12D3Koo...` 52, sha256-hashed RSA `Qm...`
/// 46, and ed25519 as a base32 CIDv1 65. Longer text is refused before it is decoded, which for
/// base58 takes time quadratic in its length.
pub const MAX_PEER_ID_TEXT: usize = 128;

/// Parses a peer ID from API input as the reference does (go-libp2p's `peer.Decode`): a base58
/// multihash (`Qm...`, `1...`), or a CID with the `libp2p-key` codec.
pub fn parse_peer_id(text: &str) -> Result<PeerId, Error> {
    let text = text.trim();
    if text.len() > MAX_PEER_ID_TEXT {
        return Err(Error::BadRequest(format!(
            "invalid peer ID: {} bytes is longer than any peer ID ({MAX_PEER_ID_TEXT} at most)",
            text.len()
        )));
    }
    let invalid = |reason: &dyn std::fmt::Display| Error::BadRequest(format!("invalid peer ID {text:?}: {reason}"));
    if text.starts_with("Qm") || text.starts_with('1') {
        return text.parse().map_err(|e| invalid(&e));
    }
    let cid = parse_cid(text).map_err(|e| invalid(&e))?;
    if cid.codec() != LIBP2P_KEY_CODEC {
        return Err(invalid(&format!("a CID with codec {:#x}, not libp2p-key", cid.codec())));
    }
    PeerId::from_multihash(*cid.hash()).map_err(|_| invalid(&"the CID's multihash is not a peer ID's"))
}

/// `GET /version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
}

#[cfg(test)]
mod tests {
    use cid::multibase::Base;
    use cid::Cid;

    use super::*;

    /// A peer ID and its CIDv1 form in `base`.
    fn as_cid(peer: &PeerId, base: Base) -> String {
        Cid::new_v1(LIBP2P_KEY_CODEC, *peer.as_ref()).to_string_of_base(base).unwrap()
    }

    #[test]
    fn every_spelling_of_a_real_peer_id_parses_within_the_bound() {
        let ed25519 = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let sha256 = PeerId::from_multihash(multihash::Multihash::wrap(0x12, &[7; 32]).unwrap()).unwrap();
        let inline_max = PeerId::from_multihash(multihash::Multihash::wrap(0, &[7; 42]).unwrap()).unwrap();
        for peer in [ed25519, sha256, inline_max] {
            let spellings = [peer.to_base58(), as_cid(&peer, Base::Base32Lower), as_cid(&peer, Base::Base36Lower)];
            for text in spellings.iter().chain([&as_cid(&peer, Base::Base16Lower)]) {
                assert!(text.len() <= MAX_PEER_ID_TEXT, "{text}");
                assert_eq!(parse_peer_id(text).unwrap(), peer, "{text}");
            }
        }
        assert!(ed25519.to_base58().starts_with("12D3Koo"));
        assert!(sha256.to_base58().starts_with("Qm"));
    }

    #[test]
    fn bad_peer_ids_are_bad_requests() {
        let cid_of_data = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        let too_long = format!("12D3KooW{}", "x".repeat(60_000));
        let cases: &[(&str, &str)] = &[
            (&too_long, "invalid peer ID: 60008 bytes is longer than any peer ID"),
            ("Qm0", "invalid peer ID \"Qm0\""),
            ("not-a-peer", "invalid peer ID \"not-a-peer\""),
            (cid_of_data, "invalid peer ID \"bafy"),
        ];
        for (text, message) in cases {
            let err = parse_peer_id(text).unwrap_err();
            assert!(matches!(err, Error::BadRequest(_)), "{err}");
            assert!(err.to_string().starts_with(message), "{err}");
        }
    }
}
