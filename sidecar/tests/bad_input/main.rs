//! Bad input, sent as exact bytes on raw sockets: every request gets a clear answer (an error JSON
//! with the right status) in bounded time, and afterwards the peer still answers and its pinset is
//! intact. One module per class of input.

#[path = "../support/mod.rs"]
mod support;

mod addresses;
mod departure;
mod http;
mod sizes;
mod vouch;

use std::net::SocketAddr;

use support::*;

/// Pinned before the bad input arrives; it must still be pinned afterwards.
pub const KEPT: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

/// Pins [`KEPT`] on a fresh peer: the baseline [`assert_unharmed`] checks against.
pub async fn pin_baseline(addr: SocketAddr) {
    let r = send(addr, "POST", &format!("/pins/{KEPT}")).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// The peer still answers, and the baseline pin is still in its pinset.
pub async fn assert_unharmed(addr: SocketAddr) {
    let r = get(addr, "/id").await;
    assert_eq!(r.status, 200, "the peer answers after the bad input: {r:?}");
    let r = get(addr, &format!("/allocations/{KEPT}")).await;
    assert_eq!(r.status, 200, "the pinset is intact: {r:?}");
}
