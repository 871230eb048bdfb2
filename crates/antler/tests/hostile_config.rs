//! The config parser and `${VAR}` substitution on hostile input (property tests, the stable
//! stand-in for a fuzzer): any text, and YAML made of the real sections and keys with values
//! of every type, parses or is a clear error; never a panic.

use antler::config::{parse, substitute};
use proptest::prelude::*;

fn env(name: &str) -> Option<String> {
    match name {
        "SET" => Some("8123".into()),
        "EMPTY" => Some(String::new()),
        "NESTED" => Some("${SET}".into()),
        _ => None,
    }
}

/// Keys of the sections the loader knows, with a few it does not.
fn key() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("port"),
        Just("host"),
        Just("heartbeat_seconds"),
        Just("max_body_mb"),
        Just("backend"),
        Just("sqlite_dir"),
        Just("postgres_url"),
        Just("pool_size"),
        Just("type"),
        Just("redis_url"),
        Just("mode"),
        Just("max_concurrent_runs"),
        Just("max_pending_runs"),
        Just("default_multitask_strategy"),
        Just("timeout_seconds"),
        Just("models"),
        Just("unknown"),
    ]
}

fn section() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("server"),
        Just("database"),
        Just("stream_bridge"),
        Just("runs"),
        Just("auth"),
        Just("run_events"),
        Just("models"),
        Just("graphs"),
        Just("checkpointer"),
        Just("weird"),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("[1, {a: b}]".to_string()),
        Just("{x: 1}".to_string()),
        Just("'${SET}'".to_string()),
        Just("$UNSET".to_string()),
        Just("${EMPTY:-d}".to_string()),
        "[ -~]{0,16}".prop_map(|s| format!("{s:?}")),
    ]
}

fn document() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            section(),
            proptest::collection::vec((key(), scalar()), 0..4),
        ),
        0..5,
    )
    .prop_map(|sections| {
        let mut out = String::new();
        for (name, entries) in sections {
            out.push_str(&format!("{name}:\n"));
            for (k, v) in entries {
                out.push_str(&format!("  {k}: {v}\n"));
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_is_an_error(text in any::<String>()) {
        let _ = parse(&text, &env);
        let _ = substitute(&text, &env);
    }

    #[test]
    fn substitution_of_dollar_soup_never_panics(text in "[${}:\\-=?A-Z_a-z0-9 ]{0,40}") {
        let _ = substitute(&text, &env);
    }

    #[test]
    fn documents_of_real_sections_parse_or_are_errors(doc in document()) {
        match parse(&doc, &env) {
            Ok(cfg) => prop_assert!(cfg.max_body_bytes > 0),
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(!message.is_empty());
            }
        }
    }
}
