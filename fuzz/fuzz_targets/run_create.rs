//! Run-create bodies: any JSON is a run request or a 422 (`Invalid`), nothing else.
#![no_main]

use antler_runtime::{RunCreate, RuntimeError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        match RunCreate::parse(&body) {
            Ok(_) | Err(RuntimeError::Invalid(_)) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
});
