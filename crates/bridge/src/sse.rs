//! Server-Sent Events frame encoding used by the HTTP layer.
//!
//! Frames are `event: <name>\r\ndata: <json>\r\nid: <id>\r\n\r\n` — CRLF line ends, always in
//! that order, the `id` line only when an id is given (DeerFlow's `format_sse` order). A payload
//! that contains line breaks is split over several `data:` lines, as the SSE spec requires, so
//! a frame can never be cut short by its data; CR/LF in the event name or id are dropped.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;

use crate::event::{BridgeEvent, BridgeItem, GapInfo};

const CRLF: &[u8] = b"\r\n";

/// Encodes one event frame.
pub fn frame(event: &str, data: &str, id: Option<&str>) -> Bytes {
    let mut out = BytesMut::with_capacity(event.len() + data.len() + id.map_or(0, str::len) + 32);
    out.put_slice(b"event: ");
    put_single_line(&mut out, event);
    out.put_slice(CRLF);
    if data.contains(['\r', '\n']) {
        for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
            out.put_slice(b"data: ");
            out.put_slice(line.as_bytes());
            out.put_slice(CRLF);
        }
    } else {
        out.put_slice(b"data: ");
        out.put_slice(data.as_bytes());
        out.put_slice(CRLF);
    }
    if let Some(id) = id {
        out.put_slice(b"id: ");
        put_single_line(&mut out, id);
        out.put_slice(CRLF);
    }
    out.put_slice(CRLF);
    out.freeze()
}

fn put_single_line(out: &mut BytesMut, text: &str) {
    if text.contains(['\r', '\n']) {
        for part in text.split(['\r', '\n']) {
            out.put_slice(part.as_bytes());
        }
    } else {
        out.put_slice(text.as_bytes());
    }
}

/// The keep-alive comment `: heartbeat\r\n\r\n`.
pub fn heartbeat() -> Bytes {
    Bytes::from_static(b": heartbeat\r\n\r\n")
}

/// The final frame of a run stream: `event: end\r\ndata: null\r\n\r\n` (no id).
pub fn end() -> Bytes {
    Bytes::from_static(b"event: end\r\ndata: null\r\n\r\n")
}

/// An error frame: `event: error` with `{"error": kind, "message": text}` (no id).
pub fn error(kind: &str, message: &str) -> Bytes {
    let data = json!({"error": kind, "message": message}).to_string();
    frame("error", &data, None)
}

/// The `gap` frame (no id) with DeerFlow's payload; see [`GapInfo::to_json`].
pub fn gap(info: &GapInfo) -> Bytes {
    frame("gap", &info.to_json().to_string(), None)
}

/// A bridge event as a frame carrying its id.
pub fn event(event: &BridgeEvent) -> Bytes {
    frame(&event.event, &event.data, Some(&event.id))
}

/// Any bridge item as its frame: events with ids, `gap`, `end`.
pub fn item(item: &BridgeItem) -> Bytes {
    match item {
        BridgeItem::Event(e) => event(e),
        BridgeItem::Gap(info) => gap(info),
        BridgeItem::End => end(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).expect("utf8")
    }

    #[test]
    fn frame_with_and_without_id() {
        assert_eq!(
            text(frame(
                "metadata",
                r#"{"run_id":"r"}"#,
                Some("1724300000000-0")
            )),
            "event: metadata\r\ndata: {\"run_id\":\"r\"}\r\nid: 1724300000000-0\r\n\r\n"
        );
        assert_eq!(
            text(frame("values", "{}", None)),
            "event: values\r\ndata: {}\r\n\r\n"
        );
    }

    #[test]
    fn fixed_frames() {
        assert_eq!(text(heartbeat()), ": heartbeat\r\n\r\n");
        assert_eq!(text(end()), "event: end\r\ndata: null\r\n\r\n");
        assert_eq!(item(&BridgeItem::End), end());
    }

    #[test]
    fn error_frame_is_json_with_kind_and_message() {
        let f = text(error("ValueError", "boom \"quoted\""));
        assert!(f.starts_with("event: error\r\ndata: "));
        assert!(f.ends_with("\r\n\r\n"));
        assert!(!f.contains("\r\nid: "));
        let data = f
            .trim_start_matches("event: error\r\ndata: ")
            .trim_end_matches("\r\n\r\n");
        let v: serde_json::Value = serde_json::from_str(data).expect("json");
        assert_eq!(
            v,
            json!({"error": "ValueError", "message": "boom \"quoted\""})
        );
    }

    #[test]
    fn gap_frame_has_no_id_and_deerflow_payload() {
        let info = GapInfo {
            stream_id: "r1".into(),
            requested_event_id: None,
            earliest_available_event_id: "5-3".into(),
            latest_available_event_id: "9-7".into(),
        };
        let f = text(gap(&info));
        let data = f
            .trim_start_matches("event: gap\r\ndata: ")
            .trim_end_matches("\r\n\r\n");
        let v: serde_json::Value = serde_json::from_str(data).expect("json");
        assert_eq!(v, info.to_json());
        assert_eq!(text(item(&BridgeItem::Gap(info))), f);
    }

    #[test]
    fn event_frame_uses_event_id() {
        let e = BridgeEvent {
            id: "7-2".into(),
            seq: 2,
            event: "custom".into(),
            data: r#"{"step":1}"#.into(),
        };
        assert_eq!(
            text(item(&BridgeItem::Event(e))),
            "event: custom\r\ndata: {\"step\":1}\r\nid: 7-2\r\n\r\n"
        );
    }

    #[test]
    fn multiline_data_and_injection_are_neutralised() {
        assert_eq!(
            text(frame("x\r\nevil: 1", "{\n\"a\": 1\r\n}", Some("1-\n0"))),
            "event: xevil: 1\r\ndata: {\r\ndata: \"a\": 1\r\ndata: }\r\nid: 1-0\r\n\r\n"
        );
    }
}
