//! The peer's identity: an Ed25519 libp2p key kept in `identity.json` on the data volume, so the
//! peer ID survives restarts. The file format is the reference's, so existing identities migrate.

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use libp2p_identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const IDENTITY_FILE: &str = "identity.json";

#[derive(Clone)]
pub struct Identity {
    pub keypair: Keypair,
    pub peer_id: PeerId,
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    id: String,
    /// Base64 of the protobuf-encoded libp2p private key.
    private_key: String,
}

impl Identity {
    /// Loads the identity at `path`, or creates a new Ed25519 one there when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match fs::read(path) {
            Ok(bytes) => Self::parse(&bytes).map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Self::generate();
                identity.write(path)?;
                tracing::info!(peer_id = %identity.peer_id, path = %path.display(), "created a new identity");
                Ok(identity)
            }
            Err(e) => Err(Error::Config(format!("cannot read {}: {e}", path.display()))),
        }
    }

    pub fn generate() -> Self {
        let keypair = Keypair::generate_ed25519();
        Identity { peer_id: keypair.public().to_peer_id(), keypair }
    }

    fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let file: IdentityFile =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid identity file: {e}"))?;
        let key = BASE64.decode(file.private_key.trim()).map_err(|e| format!("private_key is not base64: {e}"))?;
        let keypair =
            Keypair::from_protobuf_encoding(&key).map_err(|e| format!("private_key is not a libp2p key: {e}"))?;
        let peer_id = keypair.public().to_peer_id();
        if file.id != peer_id.to_string() {
            return Err(format!("id {} does not match the private key (which gives {peer_id})", file.id));
        }
        Ok(Identity { keypair, peer_id })
    }

    /// Writes atomically (temp file, fsync, rename) and readable by the owner only.
    fn write(&self, path: &Path) -> Result<()> {
        let key = self.keypair.to_protobuf_encoding().map_err(|e| Error::Config(format!("encoding key: {e}")))?;
        let file = IdentityFile { id: self.peer_id.to_string(), private_key: BASE64.encode(key) };
        let json = serde_json::to_vec_pretty(&file).expect("identity serializes");
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&tmp)?;
        out.write_all(&json)?;
        out.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        let first = Identity::load_or_create(&path).unwrap();
        let second = Identity::load_or_create(&path).unwrap();
        assert_eq!(first.peer_id, second.peer_id);
        assert!(first.peer_id.to_string().starts_with("12D3KooW"));
    }

    #[test]
    fn mismatched_or_garbage_identity_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        Identity::load_or_create(&path).unwrap();
        let mut file: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        file["id"] = PeerId::random().to_string().into();
        fs::write(&path, file.to_string()).unwrap();
        let err = Identity::load_or_create(&path).err().unwrap().to_string();
        assert!(err.contains("does not match"), "{err}");
        fs::write(&path, "{").unwrap();
        let err = Identity::load_or_create(&path).err().unwrap().to_string();
        assert!(err.contains("not a valid identity file"), "{err}");
    }
}
