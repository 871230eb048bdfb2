//! `Last-Event-ID`: any header value parses or is `None`; what parses formats back to itself.
#![no_main]

use antler_bridge::event::{format_event_id, parse_event_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = std::str::from_utf8(data)
        && let Some((ms, seq)) = parse_event_id(id)
    {
        assert_eq!(parse_event_id(&format_event_id(ms, seq)), Some((ms, seq)));
    }
});
