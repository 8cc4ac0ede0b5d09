//! The in-process fake IPFS daemon (see mod docs). Filled in by the tracker work.
