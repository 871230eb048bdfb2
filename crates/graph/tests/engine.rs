//! Engine semantics beyond the captures: Send fan-out, joins, conditional edges, recursion limit,
//! concurrent-write conflicts, failure + pending writes, several interrupts, breakpoints,
//! cancellation, forks, subgraph interrupts, update_state, commands, custom reducers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use antler_graph::messages::{ai_message_with_id, content_text};
use antler_graph::*;
use parking_lot::Mutex;
use serde_json::{Value, json};

type Events = Arc<Mutex<Vec<StreamPart>>>;

fn sink() -> (StreamSink, Events) {
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    (Arc::new(move |p| e.lock().push(p)), events)
}

fn cfg(thread: &str, modes: &[StreamMode]) -> RunConfig {
    let mut c = RunConfig::new(thread, uuid::Uuid::now_v7().to_string());
    c.stream_modes = modes.to_vec();
    c
}

async fn run(
    g: &CompiledGraph,
    cp: &Arc<dyn Checkpointer>,
    input: RunInput,
    c: RunConfig,
) -> (Result<RunOutcome, GraphError>, Vec<StreamPart>) {
    let (s, events) = sink();
    let r = g
        .run(cp.clone(), input, c, s, CancellationToken::new())
        .await;
    let ev = events.lock().clone();
    (r, ev)
}

fn mem() -> Arc<dyn Checkpointer> {
    Arc::new(MemoryCheckpointer::new())
}

fn resume(v: Value) -> RunInput {
    RunInput::Command(Command {
        resume: Some(v),
        ..Default::default()
    })
}

#[tokio::test]
async fn send_fan_out_and_reduce() {
    let g = StateGraph::new("mapreduce")
        .channel("items", Reducer::LastValue)
        .channel("results", Reducer::Append)
        .node("split", |_i, _c| async {
            Ok(NodeOutput::Update(Value::Null))
        })
        .node("work", |i: NodeInput, _c| async move {
            let n = i
                .arg()
                .and_then(|a| a.get("n"))
                .and_then(Value::as_i64)
                .unwrap_or(-1);
            Ok(NodeOutput::Update(json!({"results": [n * 10]})))
        })
        .node("sum", |i: NodeInput, _c| async move {
            let total: i64 = i.items("results").filter_map(Value::as_i64).sum();
            Ok(NodeOutput::Update(json!({"results": [total]})))
        })
        .edge(START, "split")
        .conditional_edges(
            "split",
            |i: &NodeInput| {
                (0..i.len_of("items") as i64)
                    .map(|n| Route::Send {
                        node: "work".into(),
                        arg: json!({"n": n}),
                    })
                    .collect()
            },
            Some(&["work"]),
        )
        .edge("work", "sum")
        .edge("sum", END)
        .compile()
        .unwrap();
    let cp = mem();
    let (r, ev) = run(
        &g,
        &cp,
        RunInput::Values(json!({"items": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]})),
        cfg("t", &[StreamMode::Updates]),
    )
    .await;
    let out = r.unwrap();
    let results: Vec<i64> = out.values["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(results, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 450]);
    let work_updates = ev.iter().filter(|p| p.data.get("work").is_some()).count();
    assert_eq!(work_updates, 10);
    // sum ran once although 10 tasks triggered it
    assert_eq!(ev.iter().filter(|p| p.data.get("sum").is_some()).count(), 1);
}

#[tokio::test]
async fn join_waits_for_all_sources() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let g = StateGraph::new("join")
        .channel("log", Reducer::Append)
        .node("a", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"log": ["a"]})))
        })
        .node("b", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"log": ["b"]})))
        })
        .node("b2", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"log": ["b2"]})))
        })
        .node("c", move |i: NodeInput, _c| {
            let calls = c2.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let seen = i.items("log").count();
                Ok(NodeOutput::Update(
                    json!({"log": [format!("c saw {seen}")]}),
                ))
            }
        })
        .edge(START, "a")
        .edge(START, "b")
        .edge("b", "b2")
        .join(&["a", "b2"], "c")
        .edge("c", END)
        .compile()
        .unwrap();
    let cp = mem();
    let (r, _) = run(&g, &cp, RunInput::Values(json!({})), cfg("t", &[])).await;
    assert_eq!(r.unwrap().values["log"], json!(["a", "b", "b2", "c saw 3"]));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

fn counter_loop(limit_at: i64) -> CompiledGraph {
    StateGraph::new("loop")
        .channel(
            "n",
            Reducer::Custom(Arc::new(|a, b| {
                Ok(json!(a.as_i64().unwrap_or(0) + b.as_i64().unwrap_or(0)))
            })),
        )
        .node("inc", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"n": 1})))
        })
        .edge(START, "inc")
        .conditional_edges(
            "inc",
            move |i: &NodeInput| {
                let n = i.get_ref("n").and_then(Value::as_i64).unwrap_or(0);
                vec![Route::to(if n >= limit_at { END } else { "inc" })]
            },
            Some(&["inc", END]),
        )
        .compile()
        .unwrap()
}

#[tokio::test]
async fn conditional_loop_custom_reducer_and_recursion_limit() {
    let cp = mem();
    let (r, _) = run(
        &counter_loop(5),
        &cp,
        RunInput::Values(json!({})),
        cfg("ok", &[]),
    )
    .await;
    assert_eq!(r.unwrap().values, json!({"n": 5}));

    let mut c = cfg("deep", &[StreamMode::Values]);
    c.recursion_limit = 3;
    let (r, ev) = run(&counter_loop(100), &cp, RunInput::Values(json!({})), c).await;
    let err = r.unwrap_err();
    assert_eq!(err.kind, "GraphRecursionError");
    assert!(
        err.message
            .starts_with("Recursion limit of 3 reached without hitting a stop condition.")
    );
    // input step + 3 node steps were committed
    assert_eq!(ev.len(), 4);
    let st = counter_loop(100)
        .get_state(cp.as_ref(), "deep", None, false)
        .await
        .unwrap();
    assert_eq!(st.values, json!({"n": 3}));
    assert_eq!(st.next, vec!["inc".to_string()]);
}

#[tokio::test]
async fn last_value_written_twice_in_a_step_is_an_error() {
    let g = StateGraph::new("conflict")
        .channel("title", Reducer::LastValue)
        .node("a", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"title": "a"})))
        })
        .node("b", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"title": "b"})))
        })
        .edge(START, "a")
        .edge(START, "b")
        .compile()
        .unwrap();
    let cp = mem();
    let err = run(&g, &cp, RunInput::Values(json!({})), cfg("t", &[]))
        .await
        .0
        .unwrap_err();
    assert_eq!(err.kind, "InvalidUpdateError");
    assert!(
        err.message
            .starts_with("At key 'title': Can receive only one value per step.")
    );
}

#[tokio::test]
async fn failed_step_keeps_sibling_writes_and_does_not_rerun_them() {
    let a_calls = Arc::new(AtomicUsize::new(0));
    let b_calls = Arc::new(AtomicUsize::new(0));
    let (a2, b2) = (a_calls.clone(), b_calls.clone());
    let g = StateGraph::new("partial")
        .channel("log", Reducer::Append)
        .node("a", move |_i, _c| {
            let a = a2.clone();
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                Ok(NodeOutput::Update(json!({"log": ["a"]})))
            }
        })
        .node("b", move |_i, _c| {
            let b = b2.clone();
            async move {
                if b.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(NodeError::failed("ValueError", "boom"))
                } else {
                    Ok(NodeOutput::Update(json!({"log": ["b"]})))
                }
            }
        })
        .edge(START, "a")
        .edge(START, "b")
        .compile()
        .unwrap();
    let cp = mem();
    let err = run(&g, &cp, RunInput::Values(json!({})), cfg("t", &[]))
        .await
        .0
        .unwrap_err();
    assert_eq!(
        (err.kind.as_str(), err.message.as_str()),
        ("ValueError", "boom")
    );
    let st = g.get_state(cp.as_ref(), "t", None, false).await.unwrap();
    assert_eq!(
        st.values,
        json!({"log": []}),
        "failed step's writes not applied"
    );
    assert_eq!(st.next, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(st.tasks[0].result, Some(json!({"log": ["a"]})));
    assert_eq!(st.tasks[1].error.as_deref(), Some("ValueError('boom')"));
    let (r, _) = run(&g, &cp, RunInput::Null, cfg("t", &[])).await;
    assert_eq!(r.unwrap().values, json!({"log": ["a", "b"]}));
    assert_eq!(
        a_calls.load(Ordering::SeqCst),
        1,
        "successful sibling not re-run"
    );
    assert_eq!(b_calls.load(Ordering::SeqCst), 2);
}

fn double_interrupt() -> CompiledGraph {
    StateGraph::new("hitl")
        .channel("log", Reducer::Append)
        .node("x", |_i, c: NodeContext| async move {
            let v = c.interrupt(json!("x?"))?;
            Ok(NodeOutput::Update(json!({"log": [format!("x={v}")]})))
        })
        .node("y", |_i, c: NodeContext| async move {
            let first = c.interrupt(json!("y1?"))?;
            let second = c.interrupt(json!("y2?"))?;
            Ok(NodeOutput::Update(
                json!({"log": [format!("y={first},{second}")]}),
            ))
        })
        .edge(START, "x")
        .edge(START, "y")
        .compile()
        .unwrap()
}

#[tokio::test]
async fn several_interrupts_resumed_by_id_and_nth_call_gets_nth_value() {
    let g = double_interrupt();
    let cp = mem();
    let out = run(&g, &cp, RunInput::Values(json!({})), cfg("t", &[]))
        .await
        .0
        .unwrap();
    assert_eq!(out.interrupts.len(), 2);
    assert!(
        out.interrupts
            .iter()
            .all(|i| i.id.len() == 32 && i.id.chars().all(|c| c.is_ascii_hexdigit()))
    );
    let ix = out
        .interrupts
        .iter()
        .find(|i| i.value == json!("x?"))
        .unwrap()
        .id
        .clone();
    let iy = out
        .interrupts
        .iter()
        .find(|i| i.value == json!("y1?"))
        .unwrap()
        .id
        .clone();
    assert_ne!(ix, iy);
    let st = g.get_state(cp.as_ref(), "t", None, false).await.unwrap();
    assert_eq!(st.interrupts.len(), 2);

    let out = run(
        &g,
        &cp,
        resume(json!({ix.clone(): 1, iy.clone(): 2})),
        cfg("t", &[]),
    )
    .await
    .0
    .unwrap();
    // x finished, y asks its second question
    assert_eq!(out.interrupts.len(), 1);
    assert_eq!(out.interrupts[0].value, json!("y2?"));
    let out = run(&g, &cp, resume(json!(3)), cfg("t", &[]))
        .await
        .0
        .unwrap();
    assert!(out.interrupts.is_empty());
    assert_eq!(out.values, json!({"log": ["x=1", "y=2,3"]}));
}

#[tokio::test]
async fn breakpoints_before_and_after_resume_with_null() {
    let g = examples::slow().unwrap();
    let cp = mem();
    let mut c = cfg("t", &[StreamMode::Updates]);
    c.configurable.insert("delay".into(), json!("0"));
    c.interrupt_before = Interrupts::Nodes(vec!["step2".into()]);
    c.interrupt_after = Interrupts::Nodes(vec!["step2".into()]);
    let input = RunInput::Values(json!({"messages": [{"role": "user", "content": "go"}]}));
    let (r, ev) = run(&g, &cp, input, c.clone()).await;
    let out = r.unwrap();
    assert_eq!(out.next, vec!["step2".to_string()]);
    assert_eq!(ev.last().unwrap().data, json!({"__interrupt__": []}));
    let (r, _) = run(&g, &cp, RunInput::Null, c.clone()).await;
    let out = r.unwrap();
    assert_eq!(out.next, vec!["step3".to_string()], "paused after step2");
    let (r, _) = run(&g, &cp, RunInput::Null, c.clone()).await;
    let out = r.unwrap();
    assert!(out.next.is_empty());
    let texts: Vec<String> = out.values["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(content_text)
        .collect();
    assert_eq!(texts, ["go", "step 1", "step 2", "step 3"]);
}

#[tokio::test]
async fn cancellation_keeps_committed_steps() {
    let g = examples::slow().unwrap();
    let cp = mem();
    let mut c = cfg("t", &[StreamMode::Custom]);
    c.configurable.insert("delay".into(), json!(30));
    let cancel = CancellationToken::new();
    let (s, events) = sink();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c2.cancel();
    });
    let input = RunInput::Values(json!({"messages": ["hi"]}));
    let started = std::time::Instant::now();
    let err = g.run(cp.clone(), input, c, s, cancel).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.kind, "CancelledError");
    assert_eq!(events.lock().len(), 1, "step1 started, never ended");
    let st = g.get_state(cp.as_ref(), "t", None, false).await.unwrap();
    assert_eq!(st.next, vec!["step1".to_string()]);
    assert_eq!(st.values["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn fork_from_an_older_checkpoint() {
    let g = examples::echo().unwrap();
    let cp = mem();
    let first = run(
        &g,
        &cp,
        RunInput::Values(json!({"messages": ["one"]})),
        cfg("t", &[]),
    )
    .await
    .0
    .unwrap();
    let fork_at = first.checkpoint.unwrap().checkpoint_id;
    let second = run(
        &g,
        &cp,
        RunInput::Values(json!({"messages": ["two"]})),
        cfg("t", &[]),
    )
    .await
    .0
    .unwrap();
    let second_at = second.checkpoint.unwrap().checkpoint_id;
    let mut c = cfg("t", &[]);
    c.checkpoint_id = Some(fork_at.clone());
    let out = run(&g, &cp, RunInput::Values(json!({"messages": ["three"]})), c)
        .await
        .0
        .unwrap();
    let texts: Vec<String> = out.values["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(content_text)
        .collect();
    assert_eq!(texts, ["one", "echo: one", "three", "echo: three"]);
    let hist = g
        .get_history(cp.as_ref(), "t", &ListOptions::default())
        .await
        .unwrap();
    // 3 per run (input, loop 0, echo); the fork's input checkpoint's parent is fork_at
    assert_eq!(hist.len(), 9);
    let fork_input = hist.iter().find(|s| {
        s.parent_checkpoint_id.as_deref() == Some(fork_at.as_str())
            && s.metadata.as_ref().unwrap()["source"] == "input"
            && s.values["messages"].as_array().unwrap().len() == 2
    });
    assert!(fork_input.is_some());
    let latest = g.get_state(cp.as_ref(), "t", None, false).await.unwrap();
    assert_eq!(latest.values, out.values);
    // The other branch is intact: the fork wrote new channel versions, it did not overwrite the
    // values the second run's checkpoints point at.
    let other = g
        .get_state(cp.as_ref(), "t", Some(&second_at), false)
        .await
        .unwrap();
    let texts: Vec<String> = other.values["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(content_text)
        .collect();
    assert_eq!(texts, ["one", "echo: one", "two", "echo: two"]);
}

#[tokio::test]
async fn subgraph_interrupt_pauses_parent_and_resumes() {
    let child = examples::interrupt().unwrap();
    let g = StateGraph::new("outer")
        .channel("messages", Reducer::AddMessages)
        .channel("title", Reducer::LastValue)
        .subgraph("inner", child)
        .edge(START, "inner")
        .edge("inner", END)
        .compile()
        .unwrap();
    let cp = mem();
    let mut c = cfg("t", &[StreamMode::Updates, StreamMode::Values]);
    c.subgraphs = true;
    let (r, ev) = run(
        &g,
        &cp,
        RunInput::Values(json!({"messages": ["hi"]})),
        c.clone(),
    )
    .await;
    let out = r.unwrap();
    assert_eq!(out.interrupts.len(), 1);
    assert_eq!(out.next, vec!["inner".to_string()]);
    assert!(
        ev.iter()
            .any(|p| !p.ns.is_empty() && p.ns[0].starts_with("inner:"))
    );
    let st = g.get_state(cp.as_ref(), "t", None, true).await.unwrap();
    assert_eq!(st.interrupts.len(), 1);
    let sub = st.tasks[0].state.clone().unwrap();
    assert_eq!(sub["next"], json!(["ask"]));
    assert_eq!(sub["metadata"]["parents"][""], json!(st.checkpoint_id));
    let shallow = g.get_state(cp.as_ref(), "t", None, false).await.unwrap();
    assert!(shallow.tasks[0].state.is_none());
    assert!(
        shallow.tasks[0].checkpoint.as_ref().unwrap()["checkpoint_ns"]
            .as_str()
            .unwrap()
            .starts_with("inner:")
    );

    let out = run(&g, &cp, resume(json!({"approved": true})), c)
        .await
        .0
        .unwrap();
    assert!(out.interrupts.is_empty());
    let texts: Vec<String> = out.values["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(content_text)
        .collect();
    assert_eq!(texts, ["hi", "resumed with: {'approved': True}"]);
}

#[tokio::test]
async fn update_state_as_node_computes_next() {
    let g = StateGraph::new("ab")
        .channel("log", Reducer::Append)
        .node("a", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"log": ["a"]})))
        })
        .node("b", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"log": ["b"]})))
        })
        .edge(START, "a")
        .edge("a", "b")
        .edge("b", END)
        .compile()
        .unwrap();
    let cp = mem();
    let r = g
        .update_state(
            cp.as_ref(),
            "t",
            None,
            json!({"log": ["manual"]}),
            Some("a"),
            Map::new(),
        )
        .await
        .unwrap();
    let st = g.get_state(cp.as_ref(), "t", None, false).await.unwrap();
    assert_eq!(st.checkpoint_id.as_deref(), Some(r.checkpoint_id.as_str()));
    assert_eq!(st.next, vec!["b".to_string()]);
    assert_eq!(st.metadata.as_ref().unwrap()["source"], "update");
    let out = run(&g, &cp, RunInput::Null, cfg("t", &[])).await.0.unwrap();
    assert_eq!(out.values, json!({"log": ["manual", "b"]}));
    // default as_node: the last node that ran (b -> END): nothing next
    g.update_state(
        cp.as_ref(),
        "t",
        None,
        json!({"log": ["x"]}),
        None,
        Map::new(),
    )
    .await
    .unwrap();
    let st = g.get_state(cp.as_ref(), "t", None, false).await.unwrap();
    assert!(st.next.is_empty());
    assert!(
        g.update_state(cp.as_ref(), "t", None, json!({}), Some("zzz"), Map::new())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn commands_goto_and_parent() {
    let child = StateGraph::new("child")
        .channel("log", Reducer::Append)
        .node("escape", |_i, _c| async {
            Ok(NodeOutput::Command(Command {
                update: Some(json!({"log": ["escaped"]})),
                goto: vec![Route::to("after")],
                graph: Some(PARENT.into()),
                ..Default::default()
            }))
        })
        .edge(START, "escape")
        .compile()
        .unwrap();
    let g = StateGraph::new("cmd")
        .channel("log", Reducer::Append)
        .node("router", |_i, _c| async {
            Ok(NodeOutput::Command(Command {
                update: Some(json!({"log": ["routed"]})),
                goto: vec![Route::to("sub")],
                ..Default::default()
            }))
        })
        .subgraph("sub", child)
        .node("after", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"log": ["after"]})))
        })
        .edge(START, "router")
        .compile()
        .unwrap();
    let cp = mem();
    let out = run(&g, &cp, RunInput::Values(json!({})), cfg("t", &[]))
        .await
        .0
        .unwrap();
    assert_eq!(out.values, json!({"log": ["routed", "escaped", "after"]}));
}

#[tokio::test]
async fn new_input_discards_pending_interrupt() {
    let g = examples::interrupt().unwrap();
    let cp = mem();
    let out = run(
        &g,
        &cp,
        RunInput::Values(json!({"messages": ["a"]})),
        cfg("t", &[]),
    )
    .await
    .0
    .unwrap();
    assert_eq!(out.interrupts.len(), 1);
    let out = run(
        &g,
        &cp,
        RunInput::Values(json!({"messages": ["b"]})),
        cfg("t", &[]),
    )
    .await
    .0
    .unwrap();
    // fresh start from the latest checkpoint: asks again, one interrupt (not two)
    assert_eq!(out.interrupts.len(), 1);
    assert_eq!(out.values["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn build_errors() {
    let noop = |_i: NodeInput, _c: NodeContext| async { Ok(NodeOutput::Update(Value::Null)) };
    let e = StateGraph::new("x").node("a", noop).compile().unwrap_err();
    assert_eq!(e, BuildError::NoEntryPoint);
    let e = StateGraph::new("x")
        .node("a", noop)
        .node("a", noop)
        .edge(START, "a")
        .compile()
        .unwrap_err();
    assert_eq!(e, BuildError::DuplicateNode("a".into()));
    let e = StateGraph::new("x")
        .node("a", noop)
        .edge(START, "b")
        .compile()
        .unwrap_err();
    assert_eq!(e, BuildError::UnknownNode("b".into()));
    let e = StateGraph::new("x")
        .node(START, noop)
        .compile()
        .unwrap_err();
    assert!(matches!(e, BuildError::InvalidName(_)));
    let e = StateGraph::new("x")
        .node("a", noop)
        .edge(START, "a")
        .join(&["a", "q"], "a")
        .compile()
        .unwrap_err();
    assert_eq!(e, BuildError::UnknownNode("q".into()));
}

#[tokio::test]
async fn drawable_matches_reference() {
    let all: std::collections::HashMap<_, _> = examples::all().into_iter().collect();
    assert_eq!(
        all["echo"].drawable(false),
        json!({"nodes":[{"id":"__start__","type":"runnable","data":{"name":"__start__"}},{"id":"echo","type":"runnable","data":{"name":"echo"}},{"id":"__end__"}],"edges":[{"source":"__start__","target":"echo"},{"source":"echo","target":"__end__"}]})
    );
    assert_eq!(
        all["parent"].drawable(true),
        json!({"nodes":[{"id":"__start__","type":"runnable","data":{"name":"__start__"}},{"id":"__end__"},{"id":"child:chat","type":"runnable","data":{"name":"child:chat"}}],"edges":[{"source":"__start__","target":"child:chat"},{"source":"child:chat","target":"__end__"}]})
    );
    assert_eq!(all["parent"].subgraphs().len(), 1);
    assert_eq!(
        all["parent"].state_keys(),
        vec!["messages".to_string(), "title".to_string()]
    );
}

#[tokio::test]
async fn chat_message_ids_follow_streaming() {
    let g = examples::chat().unwrap();
    let cp = mem();
    let out = run(
        &g,
        &cp,
        RunInput::Values(json!({"messages": ["q"]})),
        cfg("a", &[StreamMode::Values]),
    )
    .await
    .0
    .unwrap();
    let id = out.values["messages"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("lc_run--") && id.ends_with("-0"), "{id}");
    let (r, ev) = run(
        &g,
        &cp,
        RunInput::Values(json!({"messages": ["q"]})),
        cfg("b", &[StreamMode::Messages, StreamMode::Events]),
    )
    .await;
    let out = r.unwrap();
    let id = out.values["messages"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!id.ends_with("-0"));
    let chunks: Vec<&StreamPart> = ev
        .iter()
        .filter(|p| p.mode == StreamMode::Messages)
        .collect();
    assert_eq!(
        chunks.len(),
        9,
        "whole message not re-sent after its chunks"
    );
    let kinds: Vec<String> = ev
        .iter()
        .filter(|p| p.mode == StreamMode::Events)
        .map(|p| p.data["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("on_chain_start"));
    assert!(kinds.contains(&"on_chat_model_start".to_string()));
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "on_chat_model_stream")
            .count(),
        9
    );
    assert!(kinds.contains(&"on_chat_model_end".to_string()));
    assert_eq!(kinds.last().map(String::as_str), Some("on_chain_end"));
    let _ = ai_message_with_id("x", "y");
}

#[tokio::test]
async fn command_input_update_and_goto() {
    let g = examples::echo().unwrap();
    let cp = mem();
    run(
        &g,
        &cp,
        RunInput::Values(json!({"messages": ["hi"]})),
        cfg("t", &[]),
    )
    .await
    .0
    .unwrap();
    let cmd = Command {
        update: Some(json!({"title": "renamed"})),
        ..Default::default()
    };
    let out = run(&g, &cp, RunInput::Command(cmd), cfg("t", &[]))
        .await
        .0
        .unwrap();
    assert_eq!(out.values["title"], "renamed");
    let st = g.get_state(cp.as_ref(), "t", None, false).await.unwrap();
    assert_eq!(st.values["title"], "renamed", "command update persisted");
    let cmd: Command = serde_json::from_value(
        json!({"goto": "echo", "update": {"messages": [{"role": "user", "content": "again"}]}}),
    )
    .unwrap();
    let out = run(&g, &cp, RunInput::Command(cmd), cfg("t", &[]))
        .await
        .0
        .unwrap();
    let texts: Vec<String> = out.values["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(content_text)
        .collect();
    assert_eq!(texts, ["hi", "echo: hi", "again", "echo: again"]);
}

#[tokio::test]
async fn panicking_node_fails_the_run() {
    let g = StateGraph::new("p")
        .channel("x", Reducer::LastValue)
        .node("bad", |_i, _c| async {
            if std::env::var("NEVER_SET_XYZ").is_err() {
                panic!("kaboom");
            }
            Ok(NodeOutput::Update(Value::Null))
        })
        .edge(START, "bad")
        .compile()
        .unwrap();
    let cp = mem();
    let err = run(&g, &cp, RunInput::Values(json!({})), cfg("t", &[]))
        .await
        .0
        .unwrap_err();
    assert_eq!(
        (err.kind.as_str(), err.message.as_str()),
        ("PanicError", "kaboom")
    );
}

/// LangGraph 1.2 checks the limit before looking for tasks: a graph needing k node steps
/// needs `recursion_limit >= k + 1` (verified against the Python library).
#[tokio::test]
async fn recursion_limit_matches_langgraph_off_by_one() {
    fn chain(k: usize) -> CompiledGraph {
        let mut g = StateGraph::new("c").channel("n", Reducer::LastValue);
        for i in 0..k {
            g = g.node(&format!("n{i}"), move |_i, _c| async move {
                Ok(NodeOutput::Update(json!({"n": i})))
            });
        }
        g = g.edge(START, "n0");
        for i in 1..k {
            g = g.edge(&format!("n{}", i - 1), &format!("n{i}"));
        }
        g.compile().unwrap()
    }
    for (k, limit, ok) in [
        (1, 1, false),
        (2, 2, false),
        (3, 3, false),
        (3, 4, true),
        (1, 2, true),
    ] {
        let cp = mem();
        let mut c = cfg("t", &[]);
        c.recursion_limit = limit;
        let r = run(&chain(k), &cp, RunInput::Values(json!({})), c).await.0;
        assert_eq!(r.is_ok(), ok, "k={k} limit={limit}: {r:?}");
        if let Err(e) = r {
            assert_eq!(e.kind, "GraphRecursionError");
        }
    }
}

/// Behaviours checked against the Python library (langgraph 1.2.22).
#[tokio::test]
async fn langgraph_parity_details() {
    // a single resume value with several pending interrupts is an error
    let g = double_interrupt();
    let cp = mem();
    run(&g, &cp, RunInput::Values(json!({})), cfg("a", &[]))
        .await
        .0
        .unwrap();
    let err = run(&g, &cp, resume(json!("v")), cfg("a", &[]))
        .await
        .0
        .unwrap_err();
    assert_eq!(err.kind, "RuntimeError");
    assert!(
        err.message
            .starts_with("When there are multiple pending interrupts")
    );

    // push tasks come first in `next`, pull writes are applied before push writes
    let g = StateGraph::new("d")
        .channel("log", Reducer::Append)
        .node("split", |_i, _c| async {
            Ok(NodeOutput::Update(json!({})))
        })
        .node("work", |i: NodeInput, _c| async move {
            Ok(NodeOutput::Update(
                json!({"log": [i.arg().and_then(|a| a.get("n")).cloned()]}),
            ))
        })
        .node("other", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"log": ["a"]})))
        })
        .edge(START, "split")
        .conditional_edges(
            "split",
            |_i: &NodeInput| {
                let mut r: Vec<Route> = (0..3)
                    .map(|n| Route::Send {
                        node: "work".into(),
                        arg: json!({"n": n}),
                    })
                    .collect();
                r.push(Route::to("other"));
                r
            },
            None,
        )
        .compile()
        .unwrap();
    let mut c = cfg("d", &[]);
    c.interrupt_before = Interrupts::Nodes(vec!["work".into()]);
    run(&g, &cp, RunInput::Values(json!({"log": []})), c.clone())
        .await
        .0
        .unwrap();
    let st = g.get_state(cp.as_ref(), "d", None, false).await.unwrap();
    assert_eq!(st.next, ["work", "work", "work", "other"]);
    assert_eq!(st.tasks[1].path, json!(["__pregel_push", 1, false]));
    let out = run(&g, &cp, RunInput::Null, c).await.0.unwrap();
    assert_eq!(out.values, json!({"log": ["a", 0, 1, 2]}));

    // update_state on an empty thread acts as input: step 0, next = START's targets
    let e = examples::echo().unwrap();
    e.update_state(
        cp.as_ref(),
        "e",
        None,
        json!({"messages": ["m"]}),
        None,
        Map::new(),
    )
    .await
    .unwrap();
    let st = e.get_state(cp.as_ref(), "e", None, false).await.unwrap();
    assert_eq!(st.next, ["echo"]);
    assert_eq!(st.metadata.unwrap()["step"], 0);
}

/// Replaying from an older checkpoint with a null input forks it and re-runs its tasks.
#[tokio::test]
async fn replay_from_checkpoint_forks_and_reruns() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let g = StateGraph::new("r")
        .channel("log", Reducer::Append)
        .node("a", move |_i, _c| {
            let calls = c2.clone();
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(NodeOutput::Update(json!({"log": [format!("a{n}")]})))
            }
        })
        .edge(START, "a")
        .compile()
        .unwrap();
    let cp = mem();
    run(
        &g,
        &cp,
        RunInput::Values(json!({"log": ["in"]})),
        cfg("t", &[]),
    )
    .await
    .0
    .unwrap();
    let hist = g
        .get_history(cp.as_ref(), "t", &ListOptions::default())
        .await
        .unwrap();
    let step0 = hist
        .iter()
        .find(|h| h.metadata.as_ref().unwrap()["step"] == 0)
        .unwrap();
    let mut c = cfg("t", &[]);
    c.checkpoint_id = step0.checkpoint_id.clone();
    let out = run(&g, &cp, RunInput::Null, c).await.0.unwrap();
    assert_eq!(out.values, json!({"log": ["in", "a2"]}));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let hist = g
        .get_history(cp.as_ref(), "t", &ListOptions::default())
        .await
        .unwrap();
    let meta: Vec<(i64, String)> = hist
        .iter()
        .take(2)
        .map(|h| {
            let m = h.metadata.as_ref().unwrap();
            (
                m["step"].as_i64().unwrap(),
                m["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(meta, vec![(2, "loop".to_string()), (1, "fork".to_string())]);
    assert_eq!(hist[1].parent_checkpoint_id, step0.checkpoint_id);
    assert_eq!(hist[1].next, ["a"]);
}
