//! Pins as Kubernetes objects: each `Pin` is the desired state of one CID in one cluster.
//!
//! # Passes over a cluster, not reconciles of one Pin
//! The cluster reports where its pins are in one streamed listing (`GET /pins`, NDJSON), so the
//! unit of work is a cluster's whole set of Pins: a pass lists the cluster once, plans every Pin
//! of it ([`plan`], a pure function), and carries the steps out with bounded concurrency toward
//! the sidecar and the API server. A Pin with nothing to do costs nothing but its share of the
//! listing; 10,000 Pins are as many lines of one response, not 10,000 requests.
//!
//! Passes run when a Pin or a cluster changes (a watch event; events that arrive during a pass
//! fold into one next pass), soon after a pass that changed anything or left a Pin in progress,
//! and every few seconds when all is settled: that is how a pin removed behind the operator's
//! back, or a daemon that finished fetching, is noticed.
//!
//! # What each Pin gets
//! - A finalizer ([`FINALIZER`]) before anything reaches the cluster, so that deleting the Pin
//!   unpins the CID, also when the cluster cannot be reached at that moment (the finalizer waits,
//!   with a `Ready` condition saying why; the passes back off while the cluster is away).
//! - Its spec sent as pin options through any sidecar that answers (`POST /pins/{cid}`);
//!   allocations by pod name become peer IDs. A spec change (a new generation) is sent again.
//!   `status.observedGeneration` records the generation the cluster has; `expireIn` becomes an
//!   absolute expiry when a generation is first sent, recorded as `status.expiresAt`.
//! - Its status, written only when it changes (no echo loop: the controller compares with what it
//!   last wrote, not with a watch event that may not have arrived yet).
//! - A CID missing from the listing whose spec the cluster had is pinned again, with a `Restored`
//!   warning: the object is the desired state. After its expiry it is left `Expired` instead.
//!   Pins made through the REST API that no Pin object names are never touched.
//! - A spec the cluster cannot take (a CID that does not decode, a pod that is not a peer, a CID
//!   another Pin already owns) is marked `Error` with an `Invalid` warning once, and not sent until
//!   it changes. A refusal by the cluster is retried with a growing backoff.

mod controller;
mod execute;
mod observe;
pub mod plan;

pub use controller::run;
pub use plan::{plan, Action, Observed};

/// On every Pin: its CID is unpinned from the cluster before the object goes.
pub const FINALIZER: &str = "ipfscluster.io/unpinned";
