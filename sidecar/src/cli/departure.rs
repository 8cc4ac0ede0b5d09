//! `cluster-ctl peers await-departure`: the preStop hook of a peer's pod under the Kubernetes
//! operator. It returns once the operator removed the peer from the cluster or declared that the
//! pod only restarts, so that a condemned peer is never stopped while it still counts as a voter.

use std::time::Duration;

use tokio::time::Instant;

use super::{error_code, Failure, Output};
use crate::client::Client;
use crate::types::{format_go_duration, Departure, DepartureStatus};
use crate::Error;

/// Each request's wait: short enough to notice a lost connection soon, long enough to be idle.
const POLL: Duration = Duration::from_secs(10);
/// Beyond the wait, how long a request may take.
const REQUEST_SLACK: Duration = Duration::from_secs(5);

pub(super) async fn await_departure(client: &Client, out: &Output, timeout: Duration) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Local {
                doing: "waiting for the departure",
                error: Error::Timeout(format!(
                    "nothing decided within {}: stopping as a member (is the operator running?)",
                    format_go_duration(timeout)
                )),
            });
        }
        let wait = left.min(POLL);
        match client.clone().with_timeout(wait + REQUEST_SLACK).departure(wait).await {
            Ok(Departure::Undecided) | Err(Error::Timeout(_)) => continue,
            Ok(departure) => return out.one(&DepartureStatus { departure }, describe),
            // Nothing answers: the peer has stopped (a removed peer exits by itself).
            Err(error) if error_code(&error) == 0 => {
                return out.one(&DepartureStatus { departure: Departure::Removed }, |_| {
                    format!("the peer's API does not answer ({error}): it has stopped\n")
                })
            }
            Err(error) => return Err(Failure::Api(error)),
        }
    }
}

fn describe(status: &DepartureStatus) -> String {
    match status.departure {
        Departure::Restart => "the pod restarts: the peer stays a member\n".into(),
        Departure::Removed => "the peer left the cluster\n".into(),
        Departure::Undecided => "undecided\n".into(),
    }
}
