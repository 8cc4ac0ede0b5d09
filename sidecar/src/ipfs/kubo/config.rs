//! `ipfs_connector.ipfshttp`: where the daemon is and how long its calls may take.

use std::time::Duration;

use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::types::go_duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KuboConfig {
    /// The daemon's RPC API address.
    pub node_multiaddress: Multiaddr,
    /// A pin fails when the daemon's progress reports stop for this long (Kubo reports progress
    /// while fetching; js-ipfs does not, so there only `pin_deadline` applies).
    #[serde(with = "go_duration")]
    pub pin_timeout: Duration,
    /// The overall bound of one pin or add, also sent to the daemon as `timeout=`.
    #[serde(with = "go_duration")]
    pub pin_deadline: Duration,
    #[serde(with = "go_duration")]
    pub unpin_timeout: Duration,
    /// Bound of the short calls (id, pin status, repo stat, resolve, swarm connect); for pin
    /// listings, the longest wait for the next line.
    #[serde(with = "go_duration", alias = "ipfs_request_timeout")]
    pub request_timeout: Duration,
    /// Bound of one garbage collection, which may take long on a large repository.
    #[serde(with = "go_duration")]
    pub repogc_timeout: Duration,
}

impl Default for KuboConfig {
    fn default() -> Self {
        KuboConfig {
            node_multiaddress: "/ip4/127.0.0.1/tcp/5001".parse().expect("a valid multiaddr"),
            pin_timeout: Duration::from_secs(2 * 60),
            pin_deadline: Duration::from_secs(60 * 60),
            unpin_timeout: Duration::from_secs(3 * 60 * 60),
            request_timeout: Duration::from_secs(60),
            repogc_timeout: Duration::from_secs(24 * 60 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_section_with_go_durations() {
        let config: KuboConfig = serde_json::from_str(
            r#"{"node_multiaddress":"/dns4/ipfs/tcp/5001","pin_timeout":"2m0s","unpin_timeout":"3h0m0s",
                "ipfs_request_timeout":"5m0s","repogc_timeout":"24h0m0s","informer_trigger_interval":0}"#,
        )
        .unwrap();
        assert_eq!(config.node_multiaddress.to_string(), "/dns4/ipfs/tcp/5001");
        assert_eq!(config.request_timeout, Duration::from_secs(300));
        assert_eq!(config.pin_deadline, KuboConfig::default().pin_deadline);
    }

    #[test]
    fn empty_section_is_the_default_and_round_trips() {
        let config: KuboConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, KuboConfig::default());
        let written = serde_json::to_value(&config).unwrap();
        assert_eq!(written["pin_timeout"], "2m0s");
        assert_eq!(written["pin_deadline"], "1h0m0s");
        assert_eq!(serde_json::from_value::<KuboConfig>(written).unwrap(), config);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(serde_json::from_str::<KuboConfig>(r#"{"pin_timeout":"soon"}"#).is_err());
        assert!(serde_json::from_str::<KuboConfig>(r#"{"node_multiaddress":"localhost:5001"}"#).is_err());
    }
}
