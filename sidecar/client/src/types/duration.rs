//! Durations in configuration files, written the way Go (and so IPFS Cluster's `service.json`) writes
//! them: `"2m0s"`, `"1h0m0s"`, `"500ms"`, `"1.5s"`.

use std::time::Duration;

/// Parses a Go duration (`1h30m`, `90s`, `1.5h`, `250ms`); humantime forms (`1day`) are accepted too.
pub fn parse_go_duration(text: &str) -> Option<chrono::Duration> {
    let std = humantime::parse_duration(text).ok().or_else(|| parse_fractional(text))?;
    chrono::Duration::from_std(std).ok()
}

fn parse_fractional(text: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_end..];
    }
    // Out of range (too long, or not a number after adding up) is no duration.
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// Parses a Go-style duration as a std duration (`"2m0s"`, `"90s"`, `"1.5h"`); `None` when it is not one.
pub fn parse_std_duration(text: &str) -> Option<Duration> {
    parse_go_duration(text)?.to_std().ok()
}

/// Formats like Go's `time.Duration.String()`, so a written config reads as users expect.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let secs = d.as_secs();
    let (hours, minutes) = (secs / 3600, secs / 60 % 60);
    let seconds = decimal(u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()), 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / unit` with the fraction written out and trailing zeros dropped.
fn decimal(value: u128, unit: u128) -> String {
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Serde for a [`Duration`] as a Go-style string. Reading also accepts an integer number of
/// nanoseconds, which is how Go's `encoding/json` writes a bare `time.Duration`.
///
/// `#[serde(with = "cluster_client::types::go_duration")]`
pub mod go_duration {
    use std::fmt;
    use std::time::Duration;

    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_go_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"2m0s\" or a number of nanoseconds")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                super::parse_std_duration(text)
                    .ok_or_else(|| E::custom(format!("invalid duration {text:?}: expected e.g. \"2m0s\", \"500ms\"")))
            }
            fn visit_u64<E: de::Error>(self, nanos: u64) -> Result<Duration, E> {
                Ok(Duration::from_nanos(nanos))
            }
            fn visit_i64<E: de::Error>(self, nanos: i64) -> Result<Duration, E> {
                u64::try_from(nanos)
                    .map(Duration::from_nanos)
                    .map_err(|_| E::custom(format!("negative duration: {nanos}ns")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1.5h"), Some(chrono::Duration::minutes(90)));
        assert_eq!(parse_go_duration("250ms"), Some(chrono::Duration::milliseconds(250)));
        assert_eq!(parse_go_duration("nope"), None);
    }

    #[test]
    fn parses_go_syntax() {
        assert_eq!(parse_std_duration("2m0s"), Some(Duration::from_secs(120)));
        assert_eq!(parse_std_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_std_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_std_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_std_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_std_duration("soon"), None);
        assert_eq!(parse_std_duration(""), None);
    }

    #[test]
    fn durations_out_of_range_are_none_not_panics() {
        let huge = format!("{}s", "9".repeat(400));
        for text in ["18446744073709551616.5s", "9999999999999999999999h", "1e400s", &huge] {
            assert_eq!(parse_std_duration(text), None, "{text}");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(15), "15ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(3), "3s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3 * 3600 + 61), "3h1m1s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_go_duration(d), text);
            assert_eq!(parse_std_duration(text), Some(d), "{text} round-trips");
        }
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Config {
        #[serde(with = "go_duration")]
        timeout: Duration,
    }

    #[test]
    fn serde_reads_strings_and_nanoseconds() {
        let from_text: Config = serde_json::from_str(r#"{"timeout":"2m0s"}"#).unwrap();
        let from_nanos: Config = serde_json::from_str(r#"{"timeout":120000000000}"#).unwrap();
        assert_eq!(from_text, Config { timeout: Duration::from_secs(120) });
        assert_eq!(from_nanos, from_text);
        assert_eq!(serde_json::to_string(&from_text).unwrap(), r#"{"timeout":"2m0s"}"#);
        let err = serde_json::from_str::<Config>(r#"{"timeout":"soon"}"#).unwrap_err().to_string();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
        assert!(serde_json::from_str::<Config>(r#"{"timeout":-5}"#).is_err());
    }
}
