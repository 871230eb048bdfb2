//! The config parser and `${VAR}` substitution: any text parses or is an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "SET" => Some("8123".into()),
        "EMPTY" => Some(String::new()),
        "NESTED" => Some("${SET}".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = antler::config::substitute(text, &env);
        let _ = antler::config::parse(text, &env);
    }
});
