//! Real `cluster-sidecar` processes beside real IPFS daemons (js-ipfs, Kubo-compatible RPC): the
//! acceptance list of a single peer, end to end over its REST API and `cluster-ctl`.
//!
//! Most tests share one daemon for the binary (start-up costs seconds and 150 MB); the tests that
//! kill, restart or start a daemon late run their own. Every peer has its own loopback address and
//! temporary data directory. Waits poll a condition under a generous deadline; none sleeps.

use e2e::common;

mod auth;
mod car;
mod cli;
mod faults;
mod network;
mod newcomer;
mod pins;
