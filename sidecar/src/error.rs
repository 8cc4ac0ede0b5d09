//! The crate's one error type. The REST layer maps each variant to a status code, so the variant
//! says what kind of failure it is and the text says what went wrong, in the reference's words.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `error decoding Cid: ...` (400).
    #[error("{0}")]
    InvalidCid(String),
    /// Bad options, malformed bodies (400).
    #[error("{0}")]
    BadRequest(String),
    /// Not in the pinset, unknown peer... (404).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The allocator could not find enough peers (500, reference text).
    #[error("{0}")]
    Allocation(String),
    /// The IPFS daemon answered with an error.
    #[error("IPFS error: {0}")]
    Ipfs(String),
    /// The IPFS daemon could not be reached at all.
    #[error("IPFS daemon unreachable: {0}")]
    IpfsUnreachable(String),
    /// Another cluster peer could not be reached (down, wrong address, or another cluster secret).
    #[error("peer unreachable: {0}")]
    PeerUnreachable(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// The durable state could not be read or written.
    #[error("state storage: {0}")]
    Storage(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the peer is shutting down")]
    ShuttingDown,
    /// A cluster peer's REST API answered with an error that none of the variants above names
    /// (the client's view of a server-side failure).
    #[error("{message}")]
    Remote { code: u16, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
