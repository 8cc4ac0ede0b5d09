//! Pin options as they travel in the query string of `POST /pins/{cid}` and `POST /add`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};

use super::cid::{parse_cid, Cid};
use super::duration::parse_go_duration;
use super::peer::parse_peer_id;
use super::pin::PinMode;
use crate::Error;

/// What a client asks for; the cluster fills defaults and allocations to make a [`super::Pin`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PinOptions {
    /// 0 = the cluster default.
    pub replication_factor_min: i32,
    pub replication_factor_max: i32,
    pub name: String,
    pub mode: PinMode,
    pub shard_size: u64,
    pub user_allocations: Vec<PeerId>,
    pub expire_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
    pub pin_update: Option<Cid>,
    pub origins: Vec<Multiaddr>,
}

impl PinOptions {
    /// Parses query pairs; unknown keys are ignored, bad values are a 400 with the reference's text.
    pub fn from_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, Error> {
        let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        let get = |key: &str| pairs.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v).filter(|v| !v.is_empty());
        let mut opts = PinOptions { name: get("name").unwrap_or_default().to_string(), ..Default::default() };

        opts.mode = match get("mode") {
            None | Some("recursive") => PinMode::Recursive,
            Some("direct") => PinMode::Direct,
            Some(_) => return Err(invalid("mode")),
        };
        let both = get("replication");
        opts.replication_factor_min = int_param(both.or(get("replication-min")), "replication-min")?;
        opts.replication_factor_max = int_param(both.or(get("replication-max")), "replication-max")?;
        if let Some(v) = get("shard-size") {
            opts.shard_size = v.parse().map_err(|_| Error::BadRequest("parameter shard_size is invalid".into()))?;
        }
        if let Some(v) = get("user-allocations") {
            opts.user_allocations = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| parse_peer_id(s).map_err(|e| Error::BadRequest(format!("user-allocations: {e}"))))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("expire-at") {
            let at = DateTime::parse_from_rfc3339(v)
                .map_err(|e| Error::BadRequest(format!("expire-at cannot be parsed: {e}")))?;
            opts.expire_at = Some(at.with_timezone(&Utc));
        } else if let Some(v) = get("expire-in") {
            let ttl =
                parse_go_duration(v).ok_or_else(|| Error::BadRequest(format!("expire-in cannot be parsed: {v}")))?;
            opts.expire_at = Some(expiry_after(ttl, v)?);
        }
        for (key, value) in &pairs {
            if let Some(meta) = key.strip_prefix("meta-").filter(|k| !k.is_empty()) {
                opts.metadata.insert(meta.to_string(), value.to_string());
            }
        }
        if let Some(v) = get("pin-update") {
            let cid =
                parse_cid(v).map_err(|e| Error::BadRequest(format!("error decoding update option parameter: {e}")))?;
            opts.pin_update = Some(cid);
        }
        if let Some(v) = get("origins") {
            for text in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let addr: Multiaddr =
                    text.parse().map_err(|e| Error::BadRequest(format!("error decoding multiaddress: {e}")))?;
                if !addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
                    return Err(Error::BadRequest(format!("multiaddress does not contain peer ID: {text}")));
                }
                opts.origins.push(addr);
            }
        }
        opts.validate_replication()?;
        Ok(opts)
    }

    /// The query string a client sends for these options (inverse of [`PinOptions::from_query`]).
    pub fn to_query(&self) -> Vec<(String, String)> {
        let mut q = vec![
            ("replication-min".to_string(), self.replication_factor_min.to_string()),
            ("replication-max".to_string(), self.replication_factor_max.to_string()),
            ("name".to_string(), self.name.clone()),
            ("mode".to_string(), self.mode.as_str().to_string()),
            ("shard-size".to_string(), self.shard_size.to_string()),
        ];
        if !self.user_allocations.is_empty() {
            let ids: Vec<String> = self.user_allocations.iter().map(ToString::to_string).collect();
            q.push(("user-allocations".into(), ids.join(",")));
        }
        if let Some(at) = &self.expire_at {
            q.push(("expire-at".into(), super::time::format(at)));
        }
        for (k, v) in &self.metadata {
            q.push((format!("meta-{k}"), v.clone()));
        }
        if let Some(cid) = &self.pin_update {
            q.push(("pin-update".into(), cid.to_string()));
        }
        if !self.origins.is_empty() {
            let addrs: Vec<String> = self.origins.iter().map(ToString::to_string).collect();
            q.push(("origins".into(), addrs.join(",")));
        }
        q
    }

    /// Both factors non-zero after defaults, min <= max, >= -1, and -1 only together. 0 means
    /// "default" and is accepted here; the cluster substitutes its defaults before allocating.
    pub fn validate_replication(&self) -> Result<(), Error> {
        let (min, max) = (self.replication_factor_min, self.replication_factor_max);
        if min < -1 {
            return Err(invalid("replication-min"));
        }
        if max < -1 {
            return Err(invalid("replication-max"));
        }
        if (min == -1) != (max == -1) && min != 0 && max != 0 {
            return Err(Error::BadRequest(
                "replication-min and replication-max must both be -1 (pin everywhere) or neither".into(),
            ));
        }
        if min > 0 && max > 0 && min > max {
            return Err(Error::BadRequest(format!(
                "replication-min ({min}) must be lower or equal than replication-max ({max})"
            )));
        }
        Ok(())
    }
}

fn invalid(param: &str) -> Error {
    Error::BadRequest(format!("parameter {param} invalid"))
}

fn int_param(value: Option<&str>, name: &str) -> Result<i32, Error> {
    value.map_or(Ok(0), |v| v.trim().parse().map_err(|_| invalid(name)))
}

/// When a pin given `expire-in` `ttl` (written `text`) expires: now plus `ttl`, or a clear error
/// when that is past the last representable time.
pub fn expiry_after(ttl: chrono::Duration, text: &str) -> crate::Result<DateTime<Utc>> {
    Utc::now()
        .checked_add_signed(ttl)
        .ok_or_else(|| Error::BadRequest(format!("expire-in {text} is too far in the future")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &[(&str, &str)]) -> Result<PinOptions, Error> {
        PinOptions::from_query(q.iter().copied())
    }

    /// A query, and the factors it gives (`None`: rejected).
    type ReplicationCase<'a> = (&'a [(&'a str, &'a str)], Option<(i32, i32)>);

    #[test]
    fn replication_table() {
        let cases: &[ReplicationCase] = &[
            (&[], Some((0, 0))),
            (&[("replication", "2")], Some((2, 2))),
            (&[("replication-min", "1"), ("replication-max", "3")], Some((1, 3))),
            (&[("replication", "-1")], Some((-1, -1))),
            (&[("replication-min", "3"), ("replication-max", "1")], None),
            (&[("replication-min", "-1"), ("replication-max", "2")], None),
            (&[("replication-min", "-2")], None),
            (&[("replication-min", "abc")], None),
            (&[("replication-max", "1.5")], None),
        ];
        for (query, expected) in cases {
            let got = parse(query).map(|o| (o.replication_factor_min, o.replication_factor_max)).ok();
            assert_eq!(got, *expected, "query {query:?}");
        }
    }

    #[test]
    fn an_expiry_too_far_away_is_a_bad_request() {
        let huge = format!("{}s", "9".repeat(400));
        for ttl in ["300000y", "9000000000000000s", "18446744073709551616.5s", "10000000000h", &huge] {
            let err = parse(&[("expire-in", ttl)]).unwrap_err();
            assert!(matches!(err, Error::BadRequest(_)), "{ttl}: {err}");
            assert!(err.to_string().starts_with("expire-in"), "{ttl}: {err}");
        }
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let err = parse(&[("replication-min", "x")]).unwrap_err();
        assert_eq!(err.to_string(), "parameter replication-min invalid");
        assert!(matches!(parse(&[("mode", "sideways")]), Err(Error::BadRequest(_))));
        assert!(matches!(parse(&[("origins", "/ip4/1.2.3.4/tcp/1")]), Err(Error::BadRequest(_))));
        assert!(matches!(parse(&[("expire-in", "soon")]), Err(Error::BadRequest(_))));
    }

    #[test]
    fn metadata_expiry_and_round_trip() {
        let opts =
            parse(&[("meta-owner", "me"), ("name", "site"), ("expire-in", "1h30m"), ("mode", "direct")]).unwrap();
        assert_eq!(opts.metadata.get("owner").map(String::as_str), Some("me"));
        assert_eq!(opts.mode, PinMode::Direct);
        let ttl = opts.expire_at.unwrap() - Utc::now();
        assert!(ttl > chrono::Duration::minutes(89) && ttl <= chrono::Duration::minutes(90));
        let query = opts.to_query();
        let again = PinOptions::from_query(query.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(again.metadata, opts.metadata);
        assert_eq!(again.name, "site");
    }
}
