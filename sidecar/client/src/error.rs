//! The one error type of the peer and of its client (the sidecar re-exports it). The REST layer
//! maps each variant to a status code, so the variant says what kind of failure it is and the text
//! says what went wrong, in the reference's words.

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
    /// The cluster cannot take the request now: no leader, no quorum (503).
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// This peer does not lead, so it cannot propose (a forwarded write goes to `leader` instead).
    #[error("cluster unavailable: this peer is not the leader")]
    NotLeader { leader: Option<u64> },
    /// The request conflicts with the cluster's state, e.g. removing its last member (409).
    #[error("{0}")]
    Conflict(String),
    /// A cluster peer's REST API answered with an error that none of the variants above names
    /// (the client's view of a server-side failure).
    #[error("{message}")]
    Remote { code: u16, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status this error answers with; also how its kind crosses an RPC between peers.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidCid(_) | Error::BadRequest(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::Unavailable(_) | Error::NotLeader { .. } => 503,
            Error::Remote { code, .. } => *code,
            _ => 500,
        }
    }

    /// The same error again, for answering several waiters of one failed operation (an IO
    /// error keeps its kind and message).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::InvalidCid(m) => Error::InvalidCid(m.clone()),
            Error::BadRequest(m) => Error::BadRequest(m.clone()),
            Error::NotFound(m) => Error::NotFound(m.clone()),
            Error::Unauthorized(m) => Error::Unauthorized(m.clone()),
            Error::Allocation(m) => Error::Allocation(m.clone()),
            Error::Ipfs(m) => Error::Ipfs(m.clone()),
            Error::IpfsUnreachable(m) => Error::IpfsUnreachable(m.clone()),
            Error::PeerUnreachable(m) => Error::PeerUnreachable(m.clone()),
            Error::Timeout(m) => Error::Timeout(m.clone()),
            Error::Storage(m) => Error::Storage(m.clone()),
            Error::Config(m) => Error::Config(m.clone()),
            Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
            Error::ShuttingDown => Error::ShuttingDown,
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            Error::Conflict(m) => Error::Conflict(m.clone()),
            Error::NotLeader { leader } => Error::NotLeader { leader: *leader },
            Error::Remote { code, message } => Error::Remote { code: *code, message: message.clone() },
        }
    }
}
