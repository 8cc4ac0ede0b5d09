//! The `pin_tracker` section of the configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::go_duration;
use crate::{Error, Result};

/// Tracker settings. `concurrent_pins` and `max_pin_queue_size` keep the names and defaults of IPFS
/// Cluster's `pin_tracker.stateless` section; unknown keys of that section (e.g.
/// `priority_pin_max_age`) are ignored so an existing `service.json` still reads.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct TrackerConfig {
    /// IPFS pin/unpin calls running at once.
    pub concurrent_pins: usize,
    /// Operations (queued, running, waiting to retry or failed) the tracker keeps at most; pins
    /// beyond it get `pin_error` until a later sync finds room for them.
    pub max_pin_queue_size: usize,
    /// How often failed operations (`pin_error`, `unpin_error`) are re-queued.
    #[serde(with = "go_duration")]
    pub pin_recover_interval: Duration,
    /// How often the daemon's pin set is read to find pins lost behind the cluster's back. A
    /// `pin/ls` of a million pins takes minutes on some daemons, hence not too often.
    #[serde(with = "go_duration")]
    pub ipfs_sync_interval: Duration,
    /// First retry delay after a failure; doubled on each further failure up to the cap.
    #[serde(with = "go_duration")]
    pub retry_backoff_base: Duration,
    #[serde(with = "go_duration")]
    pub retry_backoff_cap: Duration,
    /// Failures retried automatically before an operation stays in error until recovered.
    /// An unreachable daemon does not use these up: the tracker just waits for it.
    pub max_retries: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            concurrent_pins: 10,
            max_pin_queue_size: 1_000_000,
            pin_recover_interval: Duration::from_secs(12 * 60),
            ipfs_sync_interval: Duration::from_secs(130),
            retry_backoff_base: Duration::from_secs(1),
            retry_backoff_cap: Duration::from_secs(5 * 60),
            max_retries: 5,
        }
    }
}

impl TrackerConfig {
    pub fn validate(&self) -> Result<()> {
        let fail = |what: &str| Err(Error::Config(format!("pin_tracker: {what}")));
        if self.concurrent_pins == 0 {
            return fail("concurrent_pins must be at least 1");
        }
        if self.max_pin_queue_size == 0 {
            return fail("max_pin_queue_size must be at least 1");
        }
        if self.pin_recover_interval.is_zero() || self.ipfs_sync_interval.is_zero() {
            return fail("pin_recover_interval and ipfs_sync_interval must be positive");
        }
        if self.retry_backoff_base.is_zero() || self.retry_backoff_base > self.retry_backoff_cap {
            return fail("retry_backoff_base must be positive and at most retry_backoff_cap");
        }
        Ok(())
    }

    /// The delay before retry number `failures` (1-based): exponential, capped, with "equal
    /// jitter" (a random point in the upper half) so that many pins failing together spread out.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        let full = self.retry_backoff_base.saturating_mul(1 << exponent).min(self.retry_backoff_cap);
        let half = full / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_reference_names_and_go_durations() {
        let json = r#"{"concurrent_pins": 4, "max_pin_queue_size": 50, "pin_recover_interval": "1h0m0s",
                       "ipfs_sync_interval": "1m30s", "retry_backoff_base": "500ms",
                       "priority_pin_max_age": "24h0m0s"}"#;
        let config: TrackerConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.concurrent_pins, 4);
        assert_eq!(config.max_pin_queue_size, 50);
        assert_eq!(config.pin_recover_interval, Duration::from_secs(3600));
        assert_eq!(config.ipfs_sync_interval, Duration::from_secs(90));
        assert_eq!(config.retry_backoff_base, Duration::from_millis(500));
        assert_eq!(config.max_retries, TrackerConfig::default().max_retries);
        config.validate().unwrap();
    }

    #[test]
    fn defaults_match_the_reference() {
        let config = TrackerConfig::default();
        assert_eq!((config.concurrent_pins, config.max_pin_queue_size), (10, 1_000_000));
        assert_eq!(config.pin_recover_interval, Duration::from_secs(720));
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["pin_recover_interval"], "12m0s");
        config.validate().unwrap();
    }

    #[test]
    fn rejects_unusable_values() {
        let zero = TrackerConfig { concurrent_pins: 0, ..TrackerConfig::default() };
        assert!(matches!(zero.validate(), Err(Error::Config(_))));
        let inverted = TrackerConfig {
            retry_backoff_base: Duration::from_secs(10),
            retry_backoff_cap: Duration::from_secs(1),
            ..TrackerConfig::default()
        };
        assert!(inverted.validate().is_err());
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let config = TrackerConfig {
            retry_backoff_base: Duration::from_secs(1),
            retry_backoff_cap: Duration::from_secs(8),
            ..TrackerConfig::default()
        };
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (60, 8)] {
            let full = Duration::from_secs(full);
            for _ in 0..20 {
                let delay = config.backoff(failures);
                assert!(delay >= full / 2 && delay <= full, "failure {failures}: {delay:?}");
            }
        }
    }
}
