//! Timestamps: UTC, truncated to microseconds, serialized like LangGraph
//! (`2026-11-21T22:38:01.758930+00:00`: six fraction digits and `+00:00`).

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

/// The current time, truncated to microseconds (the precision every backend keeps).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Truncates a timestamp to microseconds.
pub fn truncate(ts: DateTime<Utc>) -> DateTime<Utc> {
    ts.trunc_subsecs(6)
}

/// Formats a timestamp the wire way: `2026-11-21T22:38:01.758930+00:00`.
pub fn format(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// Parses any RFC 3339 timestamp (with or without fraction, any offset) into UTC.
pub fn parse(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|d| truncate(d.with_timezone(&Utc)))
}

/// `#[serde(with = "antler_store::time::serde_micros")]` for `DateTime<Utc>` fields.
pub mod serde_micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes with six fraction digits and `+00:00`.
    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(ts))
    }

    /// Accepts any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "antler_store::time::serde_micros_opt")]` for `Option<DateTime<Utc>>` fields.
pub mod serde_micros_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some` like [`super::serde_micros`], `None` as null.
    pub fn serialize<S: Serializer>(ts: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.serialize_str(&super::format(ts)),
            None => s.serialize_none(),
        }
    }

    /// Accepts null or any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| super::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_like_langgraph() {
        let ts = Utc
            .with_ymd_and_hms(2026, 11, 21, 22, 38, 1)
            .single()
            .map(|t| t + chrono::Duration::nanoseconds(758_930_123))
            .unwrap();
        assert_eq!(format(&truncate(ts)), "2026-11-21T22:38:01.758930+00:00");
        let whole = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().unwrap();
        assert_eq!(format(&whole), "2026-01-02T03:04:05.000000+00:00");
        assert_eq!(parse("2026-01-02T03:04:05+00:00").unwrap(), whole);
        assert_eq!(parse("2026-01-02T05:04:05.000000+02:00").unwrap(), whole);
    }

    #[test]
    fn now_is_truncated() {
        let n = now();
        assert_eq!(n.timestamp_subsec_nanos() % 1000, 0);
    }
}
