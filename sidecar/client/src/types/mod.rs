//! Wire types shared by the server, the CLI, the operator and the tests: one definition of each.

mod api_error;
mod cid;
mod consensus;
mod duration;
mod health;
mod metric;
mod peer;
mod pin;
mod pin_options;
pub mod rendered;
mod status;
pub mod time;

pub use self::cid::{cid_serde, opt_cid_serde, parse_cid, Cid, CidKey, MAX_CID_TEXT};
pub use api_error::{ApiError, Token};
pub use consensus::{
    AddPeer, ConsensusRole, ConsensusStatus, Departure, DepartureStatus, Introduced, MemberStatus, PeerAddresses, Vouch,
};
pub use duration::{format_go_duration, go_duration, parse_go_duration, parse_std_duration};
pub use health::{
    AddedOutput, Bandwidth, BandwidthByProtocol, ConnectGraph, GlobalRepoGc, Readiness, RepoGc, RepoGcKey,
};
pub use metric::{Alert, Metric};
pub use peer::{parse_peer_id, Id, IpfsId, Version, COMPATIBLE_VERSION, MAX_PEER_ID_TEXT, RPC_PROTOCOL_VERSION};
pub use pin::{Pin, PinMode, PinType};
pub use pin_options::{expiry_after, PinOptions};
pub use status::{GlobalPinInfo, PinInfoShort, StatusFilter, TrackerStatus};

#[cfg(any(test, feature = "fixtures"))]
pub use pin::fixtures;
