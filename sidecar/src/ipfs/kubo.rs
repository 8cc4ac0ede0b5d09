//! Kubo RPC client. Filled in by the connector work.
