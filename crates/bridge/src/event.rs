//! Items that flow through the bridge: [`BridgeEvent`], [`GapInfo`], [`BridgeItem`], and the
//! event-id format.
//!
//! Event ids are `"<unix_ms>-<seq>"` where `seq` is the event's offset in its stream, starting at
//! 0 and strictly increasing. The `unix_ms` part never goes backwards within a stream (a clock
//! step back reuses the previous value), so ids also sort as `(ms, seq)` pairs — which is exactly
//! what a Redis Streams implementation needs for explicit `XADD` ids.

use serde_json::{Value, json};

/// One published event, as stored in the stream's log and handed to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeEvent {
    /// `"<unix_ms>-<seq>"`; unique and strictly increasing within the stream.
    pub id: String,
    /// Offset of the event in the stream, from 0.
    pub seq: u64,
    /// SSE event name (`metadata`, `values`, `messages`, `custom`, `error`, ...).
    pub event: String,
    /// Compact JSON, serialized once (by the publisher or its first reader) and shared by
    /// every subscriber.
    pub data: crate::Payload,
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeItem {
    /// The next event of the stream.
    Event(BridgeEvent),
    /// Events the subscriber needed were already trimmed; the subscription ends after this.
    Gap(GapInfo),
    /// The stream finished (`publish_end`, or it was cleaned up / abandoned); the subscription
    /// ends after this.
    End,
}

/// Details of a replay gap: the subscriber asked to continue after an event that is no longer
/// retained (or fell behind the trim point while reading live).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapInfo {
    /// The stream (= run id) the gap happened on.
    pub stream_id: String,
    /// The `Last-Event-ID` the client resumed from, or the last id it was given; `None` when the
    /// subscriber had not received any event yet.
    pub requested_event_id: Option<String>,
    /// Oldest id still retained.
    pub earliest_available_event_id: String,
    /// Newest id retained.
    pub latest_available_event_id: String,
}

impl GapInfo {
    /// DeerFlow's `gap` event payload:
    /// `{"code":"stream_replay_gap","run_id":...,"requested_event_id":str|null,
    /// "earliest_available_event_id":...,"latest_available_event_id":...,
    /// "recovery":"reload_durable_state"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "code": "stream_replay_gap",
            "run_id": self.stream_id,
            "requested_event_id": self.requested_event_id,
            "earliest_available_event_id": self.earliest_available_event_id,
            "latest_available_event_id": self.latest_available_event_id,
            "recovery": "reload_durable_state",
        })
    }
}

/// Formats an event id.
pub fn format_event_id(unix_ms: u64, seq: u64) -> String {
    format!("{unix_ms}-{seq}")
}

/// Parses `"<digits>-<digits>"` into `(unix_ms, seq)`; anything else (including `"-1"`) is
/// `None`.
pub fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(ms) || !all_digits(seq) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any `Last-Event-ID` a client sends parses or is `None`; never a panic.
        #[test]
        fn any_last_event_id_parses_or_is_refused(id in any::<String>(), near in "[0-9-]{0,30}") {
            for s in [&id, &near] {
                if let Some((ms, seq)) = parse_event_id(s) {
                    prop_assert_eq!(parse_event_id(&format_event_id(ms, seq)), Some((ms, seq)));
                }
            }
        }

        #[test]
        fn every_id_round_trips(ms in any::<u64>(), seq in any::<u64>()) {
            prop_assert_eq!(parse_event_id(&format_event_id(ms, seq)), Some((ms, seq)));
        }
    }

    #[test]
    fn event_ids_round_trip() {
        let id = format_event_id(1_795_300_762_766, 42);
        assert_eq!(id, "1795300762766-42");
        assert_eq!(parse_event_id(&id), Some((1_795_300_762_766, 42)));
    }

    #[test]
    fn malformed_ids_do_not_parse() {
        for bad in [
            "-1", "", "12", "a-1", "1-b", "1-", "-", "1-2-3", "1 -2", "+1-2",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn gap_json_has_deerflow_shape() {
        let gap = GapInfo {
            stream_id: "run-1".into(),
            requested_event_id: Some("1-0".into()),
            earliest_available_event_id: "2-5".into(),
            latest_available_event_id: "3-9".into(),
        };
        assert_eq!(
            gap.to_json(),
            json!({"code":"stream_replay_gap","run_id":"run-1","requested_event_id":"1-0",
                   "earliest_available_event_id":"2-5","latest_available_event_id":"3-9",
                   "recovery":"reload_durable_state"})
        );
        let none = GapInfo {
            requested_event_id: None,
            ..gap
        };
        assert_eq!(none.to_json()["requested_event_id"], Value::Null);
    }
}
