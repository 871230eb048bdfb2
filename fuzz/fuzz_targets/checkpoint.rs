//! Stored checkpoints and JSON columns: any bytes a row could hold decode or are an error; a
//! decoded checkpoint serializes and decodes back to itself, and channel values rebuilt from
//! JSON give that JSON back.
#![no_main]

use antler_graph::{ChannelValue, Checkpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = antler_store_sql::sql::parse_json("fuzz", Some(text.to_string()));
    if let Ok(checkpoint) = serde_json::from_str::<Checkpoint>(text) {
        let again = serde_json::to_string(&checkpoint).expect("a checkpoint serializes");
        let back: Checkpoint = serde_json::from_str(&again).expect("and reads back");
        assert_eq!(back, checkpoint);
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let list = value.is_array();
        assert_eq!(
            ChannelValue::from_value(value.clone(), list).to_value(),
            value
        );
    }
});
