//! Times on the wire are RFC 3339; Go's zero time `0001-01-01T00:00:00Z` means "unset".

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub fn format(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Serde for `Option<DateTime<Utc>>` where `None` is written as Go's zero time.
pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer>(time: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => s.serialize_str(&format(time)),
            None => s.serialize_str(GO_ZERO_TIME),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        // JSON may carry `null`; binary formats always carry the string that was written.
        let text: Option<String> =
            if d.is_human_readable() { Option::deserialize(d)? } else { Some(String::deserialize(d)?) };
        match text.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => {
                let time = DateTime::parse_from_rfc3339(text).map_err(serde::de::Error::custom)?;
                let time = time.with_timezone(&Utc);
                Ok((time.timestamp() > GO_ZERO_UNIX).then_some(time))
            }
        }
    }

    /// Unix seconds of 0001-01-01T00:00:00Z; anything at or before it is "unset".
    const GO_ZERO_UNIX: i64 = -62_135_596_800;
}

/// Serde for a required time that may still arrive as Go's zero time (read as the Unix epoch).
pub mod required {
    use super::*;

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        Ok(optional::deserialize(d)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "optional")]
        at: Option<DateTime<Utc>>,
    }

    #[test]
    fn unset_time_is_go_zero_time_both_ways() {
        let json = serde_json::to_string(&T { at: None }).unwrap();
        assert_eq!(json, r#"{"at":"0001-01-01T00:00:00Z"}"#);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), T { at: None });
    }

    #[test]
    fn set_time_round_trips() {
        let at = DateTime::parse_from_rfc3339("2025-05-09T10:00:00.5Z").unwrap().with_timezone(&Utc);
        let json = serde_json::to_string(&T { at: Some(at) }).unwrap();
        assert_eq!(json, r#"{"at":"2025-05-09T10:00:00.500Z"}"#);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap().at, Some(at));
    }
}
