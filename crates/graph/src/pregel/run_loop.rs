//! The Pregel loop: load the checkpoint, apply the input, run supersteps.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::channels::Channels;
use super::exec::{Exec, ExecError, TaskResult};
use super::pending::Pending;
use super::tasks::{Task, prepare};
use super::{ERROR, INTERRUPT, NO_WRITES, RESUME, TASKS, branch, recursion_message};
use crate::checkpoint::now_ts;
use crate::types::{
    Command, END, GraphError, Interrupt, NodeOutput, Route, RunInput, RunOutcome, START, StreamMode,
};

impl Exec {
    /// The loop: load, apply the input, run supersteps until done, paused or failed.
    pub(super) async fn execute(self, input: RunInput) -> Result<RunOutcome, ExecError> {
        let thread = self.cfg.thread_id.clone();
        let checkpoint_id = if self.is_root {
            self.cfg.checkpoint_id.clone()
        } else {
            None
        };
        let (tuple, values) = match self
            .cp
            .get_tuple_shared(&thread, &self.ns, checkpoint_id.as_deref())
            .await?
        {
            Some((t, v)) => (Some(t), v),
            None => (None, BTreeMap::new()),
        };
        if let (Some(id), None) = (&checkpoint_id, &tuple) {
            return Err(GraphError::new("ValueError", format!("Checkpoint {id} not found")).into());
        }
        let g = self.g.clone();
        let gi = &g.inner;
        let mut ch = Channels::load(gi, tuple.as_ref(), values);
        let mut cur_id: Option<String> = tuple.as_ref().map(|t| t.checkpoint.id.clone());
        let mut cur_step: i64 = tuple
            .as_ref()
            .and_then(|t| t.metadata.get("step").and_then(Value::as_i64))
            .unwrap_or(-2);
        let mut pending = tuple
            .as_ref()
            .map(|t| Pending::parse(&t.pending_writes))
            .unwrap_or_default();
        let loaded_parent = tuple.as_ref().and_then(|t| t.parent_checkpoint_id.clone());
        let loaded_meta = tuple
            .as_ref()
            .map(|t| t.metadata.clone())
            .unwrap_or_default();
        let loaded_source = tuple
            .as_ref()
            .and_then(|t| {
                t.metadata
                    .get("source")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "loop".to_string());
        drop(tuple);

        let events_root = self.is_root && self.emitter.wants(StreamMode::Events);
        if events_root {
            let iv = match &input {
                RunInput::Values(v) => v.clone(),
                RunInput::Command(c) => json!({
                    "graph": c.graph, "update": c.update, "resume": c.resume,
                    "goto": if c.goto.is_empty() { Value::Null } else { serde_json::to_value(&c.goto).unwrap_or(Value::Null) },
                }),
                RunInput::Null => Value::Null,
            };
            self.emitter.emit(
                StreamMode::Events,
                json!({"event": "on_chain_start", "data": {"input": iv}, "name": gi.name, "tags": [],
                       "run_id": self.cfg.run_id, "metadata": Self::with_integration(&self.base_meta, "langgraph"),
                       "parent_ids": []}),
            );
        }

        let mut resuming = false;
        let limit = i64::try_from(self.cfg.recursion_limit).unwrap_or(i64::MAX / 4);
        // LangGraph: stop = (step of the loaded checkpoint + 1) + limit + 1 when resuming, or
        // (step of the input checkpoint) + limit + 1 for new input
        let mut stop = cur_step.max(-2) + 1 + limit + 1;
        // channels changed before the first step (command updates), saved with it
        let mut pending_new: Vec<String> = Vec::new();
        let input = match input {
            // a null input is a continuation, as on the wire
            RunInput::Values(Value::Null) => RunInput::Null,
            RunInput::Command(cmd) if cur_id.is_none() && cmd.resume.is_none() => {
                RunInput::Values(cmd.update.unwrap_or(Value::Null))
            }
            other => other,
        };
        match input {
            RunInput::Values(v) => {
                // discard unfinished tasks of the previous checkpoint
                if let Some(id) = &cur_id {
                    let old = prepare(gi, &ch, id, cur_step + 1, &self.ns);
                    let version = ch.next_version();
                    ch.consume(gi, &old, version);
                }
                pending = Pending::default();
                let step = if cur_id.is_some() { cur_step + 1 } else { -1 };
                let version = ch.next_version();
                let w = vec![(START.to_string(), v)];
                let updated = ch.apply(gi, &[&w], false, version)?;
                let parent = cur_id.clone();
                let id = self
                    .save(&ch, parent.as_deref(), "input", step, updated, &[])
                    .await?;
                let next = prepare(gi, &ch, &id, step + 1, &self.ns);
                self.emit_checkpoint(
                    &ch,
                    &id,
                    parent.as_deref(),
                    "input",
                    step,
                    &next,
                    None,
                    None,
                );
                cur_id = Some(id);
                cur_step = step;
                stop = step + limit + 1;
            }
            RunInput::Command(cmd) => {
                resuming = true;
                let Some(id) = cur_id.clone() else {
                    return Ok(self.finish(&ch, None, Vec::new(), Vec::new(), events_root));
                };
                if let Some(resume) = &cmd.resume {
                    let tasks = prepare(gi, &ch, &id, cur_step + 1, &self.ns);
                    let open: Vec<(String, Vec<Interrupt>)> = tasks
                        .iter()
                        .map(|t| (t.id.clone(), pending.open_interrupts(&t.id)))
                        .filter(|(_, i)| !i.is_empty())
                        .collect();
                    let by_id = match resume {
                        Value::Object(m)
                            if !m.is_empty()
                                && m.keys().all(|k| {
                                    open.iter().any(|(_, is)| is.iter().any(|i| &i.id == k))
                                }) =>
                        {
                            Some(m.clone())
                        }
                        _ => None,
                    };
                    if by_id.is_none() && open.len() > 1 {
                        return Err(GraphError::new(
                            "RuntimeError",
                            "When there are multiple pending interrupts, you must specify the interrupt id when resuming. Docs: https://docs.langchain.com/oss/python/langgraph/interrupts#handling-multiple-interrupts.",
                        )
                        .into());
                    }
                    for (task_id, interrupts) in &open {
                        let value = match &by_id {
                            Some(m) => interrupts.iter().find_map(|i| m.get(&i.id).cloned()),
                            None => Some(resume.clone()),
                        };
                        if let Some(value) = value {
                            let n = pending.resume_count(task_id);
                            self.cp
                                .put_writes(
                                    &thread,
                                    &self.ns,
                                    &id,
                                    &format!("{task_id}~resume~{n}"),
                                    &[(RESUME.to_string(), value.clone())],
                                )
                                .await?;
                            pending
                                .resumes
                                .entry(task_id.clone())
                                .or_default()
                                .insert(n, value);
                        }
                    }
                }
                if cmd.update.is_some() || !cmd.goto.is_empty() {
                    let (_, writes, goto) = match self.output_writes(NodeOutput::Command(Command {
                        graph: None,
                        ..cmd.clone()
                    })) {
                        Ok(x) => x,
                        Err(TaskResult::Failed { kind, message }) => {
                            return Err(GraphError { kind, message }.into());
                        }
                        Err(_) => (Value::Null, Vec::new(), Vec::new()),
                    };
                    let mut all = writes;
                    for r in &goto {
                        match r {
                            Route::To(n) if n != END && gi.node(n).is_some() => {
                                all.push((branch(n), Value::Null))
                            }
                            Route::Send { node, arg } if gi.node(node).is_some() => {
                                all.push((TASKS.to_string(), json!({"node": node, "arg": arg})))
                            }
                            _ => {}
                        }
                    }
                    let version = ch.next_version();
                    let updated = ch.apply(gi, &[&all], false, version)?;
                    if cmd.resume.is_some() {
                        // saved with the next step (the resumed tasks belong to this checkpoint)
                        pending_new.extend(updated);
                    } else {
                        let step = cur_step + 1;
                        let new_id = self
                            .save(&ch, Some(&id), "input", step, updated, &[])
                            .await?;
                        let next = prepare(gi, &ch, &new_id, step + 1, &self.ns);
                        self.emit_checkpoint(
                            &ch,
                            &new_id,
                            Some(&id),
                            "input",
                            step,
                            &next,
                            None,
                            None,
                        );
                        pending = Pending::default();
                        cur_id = Some(new_id);
                        cur_step = step;
                    }
                }
                self.emit_values(&ch);
                self.emit_current_checkpoint(
                    &ch,
                    cur_id.as_deref(),
                    loaded_parent.as_deref(),
                    &loaded_source,
                    cur_step,
                    &loaded_meta,
                    &pending,
                );
            }
            RunInput::Null => {
                resuming = true;
                if cur_id.is_none() {
                    return Ok(self.finish(&ch, None, Vec::new(), Vec::new(), events_root));
                }
                self.emit_values(&ch);
                self.emit_current_checkpoint(
                    &ch,
                    cur_id.as_deref(),
                    loaded_parent.as_deref(),
                    &loaded_source,
                    cur_step,
                    &loaded_meta,
                    &pending,
                );
                if checkpoint_id.is_some() {
                    // time travel: LangGraph re-runs the checkpoint's tasks instead of reusing
                    // their old writes, on a fork (source "fork") unless it is one already
                    pending = Pending::default();
                    if let Some(id) = cur_id
                        .clone()
                        .filter(|_| loaded_source != "update" && loaded_source != "fork")
                    {
                        let step = cur_step + 1;
                        let new_id = self
                            .save(&ch, Some(&id), "fork", step, Vec::new(), &[])
                            .await?;
                        pending = Pending::default();
                        cur_id = Some(new_id);
                        cur_step = step;
                    }
                }
            }
        }

        let mut first = true;
        while let Some(id) = cur_id.clone() {
            let step = cur_step + 1;
            // LangGraph checks the limit before looking for tasks
            if step > stop {
                return Err(GraphError::new(
                    "GraphRecursionError",
                    recursion_message(self.cfg.recursion_limit),
                )
                .into());
            }
            let tasks = prepare(gi, &ch, &id, step, &self.ns);
            if tasks.is_empty() {
                break;
            }
            let is_input_step = tasks.iter().all(|t| t.name == START);
            if !(is_input_step || resuming && first)
                && tasks
                    .iter()
                    .any(|t| self.cfg.interrupt_before.matches(&t.name))
            {
                self.emitter
                    .emit(StreamMode::Updates, json!({ INTERRUPT: [] }));
                let next = tasks.iter().map(|t| t.name.clone()).collect();
                return Ok(self.finish(&ch, Some(&id), Vec::new(), next, events_root));
            }
            first = false;

            // task records first, for every task of the step (as LangGraph's tick does)
            if self.emitter.wants(StreamMode::Tasks) || self.emitter.wants(StreamMode::Debug) {
                let mut state: Option<Value> = None;
                for t in tasks
                    .iter()
                    .filter(|t| t.name != START && !pending.done.contains_key(&t.id))
                {
                    let iv = match &t.arg {
                        Some(a) => a.clone(),
                        None => state.get_or_insert_with(|| ch.state_values(gi)).clone(),
                    };
                    let rec = json!({"id": t.id, "name": t.name, "input": iv, "triggers": t.triggers, "metadata": self.cfg.metadata});
                    self.emitter.emit(StreamMode::Tasks, rec.clone());
                    if self.emitter.wants(StreamMode::Debug) {
                        self.emitter.emit(
                            StreamMode::Debug,
                            json!({"step": step, "timestamp": now_ts(), "type": "task", "payload": rec}),
                        );
                    }
                }
            }

            // run (tasks read one shared snapshot of the channels)
            let snapshot = Arc::new(ch.clone());
            let mut futs = Vec::new();
            let mut cached: Vec<Option<Vec<(String, Value)>>> = Vec::new();
            for t in &tasks {
                if let Some(w) = pending.done.get(&t.id) {
                    cached.push(Some(w.clone()));
                    futs.push(None);
                } else {
                    cached.push(None);
                    let open = !pending.open_interrupts(&t.id).is_empty();
                    futs.push(Some(self.run_task(
                        &snapshot,
                        t,
                        step,
                        pending.resume_values(&t.id),
                        open,
                        &id,
                    )));
                }
            }
            let running = futures::future::join_all(futs.into_iter().map(|f| async move {
                match f {
                    Some(f) => Some(f.await),
                    None => None,
                }
            }));
            let results = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    return Err(GraphError::new("CancelledError", "").into());
                }
                r = running => r,
            };
            // the tasks are done: release their view so the writes below mutate in place
            drop(snapshot);

            // record
            let mut failure: Option<GraphError> = None;
            let mut interrupts: Vec<Interrupt> = Vec::new();
            let mut interrupted: Vec<(&Task, Vec<Interrupt>)> = Vec::new();
            let mut parent_cmd: Option<Command> = None;
            let mut step_writes: Vec<(&Task, Vec<(String, Value)>)> = Vec::new();
            for ((t, result), cached) in tasks.iter().zip(results).zip(cached) {
                if let Some(w) = cached {
                    step_writes.push((t, w));
                    continue;
                }
                let Some(result) = result else { continue };
                match result {
                    TaskResult::Writes { update, writes } => {
                        let stored: Vec<(String, Value)> = if writes.is_empty() {
                            vec![(NO_WRITES.to_string(), Value::Null)]
                        } else {
                            writes.clone()
                        };
                        self.cp
                            .put_writes(&thread, &self.ns, &id, &t.id, &stored)
                            .await?;
                        if t.name != START {
                            self.emit_task_result(&ch, t, step, &update, None, &[]);
                        }
                        step_writes.push((t, writes));
                    }
                    TaskResult::Failed { kind, message } => {
                        let err = json!({"error": kind, "message": message});
                        self.cp
                            .put_writes(
                                &thread,
                                &self.ns,
                                &id,
                                &format!("{}~error", t.id),
                                &[(ERROR.to_string(), err.clone())],
                            )
                            .await?;
                        self.emit_task_result(&ch, t, step, &json!({}), Some(err), &[]);
                        if failure.is_none() {
                            failure = Some(GraphError { kind, message });
                        }
                    }
                    TaskResult::Interrupted(list) => {
                        let n = pending.resume_count(&t.id);
                        self.cp
                            .put_writes(
                                &thread,
                                &self.ns,
                                &id,
                                &format!("{}~interrupt~{n}", t.id),
                                &[(
                                    INTERRUPT.to_string(),
                                    serde_json::to_value(&list).unwrap_or(Value::Null),
                                )],
                            )
                            .await?;
                        interrupted.push((t, list.clone()));
                        interrupts.extend(list);
                    }
                    TaskResult::Parent(cmd) => {
                        if parent_cmd.is_none() {
                            parent_cmd = Some(cmd);
                        }
                    }
                    TaskResult::Cancelled => {
                        return Err(GraphError::new("CancelledError", "").into());
                    }
                }
            }
            if let Some(e) = failure {
                return Err(e.into());
            }
            if let Some(cmd) = parent_cmd {
                if self.is_root {
                    return Err(
                        GraphError::new("InvalidUpdateError", "There is no parent graph").into(),
                    );
                }
                return Err(ExecError::Parent(cmd));
            }
            if !interrupts.is_empty() {
                let stream: Vec<Value> =
                    interrupts.iter().map(Interrupt::to_stream_value).collect();
                self.emitter
                    .emit(StreamMode::Updates, json!({ INTERRUPT: stream }));
                if self.emitter.wants(StreamMode::Values) {
                    let mut v = ch.state_values(gi);
                    if let Value::Object(m) = &mut v {
                        m.insert(INTERRUPT.into(), Value::Array(stream));
                    }
                    self.emitter.emit(StreamMode::Values, v);
                }
                // LangGraph reports the interrupted tasks after the interrupt itself
                for (t, list) in &interrupted {
                    self.emit_task_result(&ch, t, step, &json!({}), None, list);
                }
                let next = tasks.iter().map(|t| t.name.clone()).collect();
                return Ok(self.finish(&ch, Some(&id), interrupts, next, events_root));
            }

            // apply
            let version = ch.next_version();
            let consumed = ch.consume(gi, &tasks, version);
            // LangGraph applies writes sorted by task path: pulls (by node name), then pushes
            step_writes.sort_by_key(|(t, _)| t.order_key());
            let refs: Vec<&[(String, Value)]> =
                step_writes.iter().map(|(_, w)| w.as_slice()).collect();
            let updated = ch.apply(gi, &refs, true, version)?;
            let mut extra = consumed;
            extra.append(&mut pending_new);
            let new_id = self
                .save(&ch, Some(&id), "loop", step, updated, &extra)
                .await?;
            pending = Pending::default();
            cur_id = Some(new_id.clone());
            cur_step = step;
            self.emit_values(&ch);
            let next = if self.emitter.wants(StreamMode::Checkpoints)
                || self.emitter.wants(StreamMode::Debug)
            {
                prepare(gi, &ch, &new_id, step + 1, &self.ns)
            } else {
                Vec::new()
            };
            self.emit_checkpoint(&ch, &new_id, Some(&id), "loop", step, &next, None, None);
            if !is_input_step
                && tasks
                    .iter()
                    .any(|t| self.cfg.interrupt_after.matches(&t.name))
            {
                let next = prepare(gi, &ch, &new_id, step + 1, &self.ns);
                self.emitter
                    .emit(StreamMode::Updates, json!({ INTERRUPT: [] }));
                let names = next.iter().map(|t| t.name.clone()).collect();
                return Ok(self.finish(&ch, Some(&new_id), Vec::new(), names, events_root));
            }
        }
        let id = cur_id.clone();
        Ok(self.finish(&ch, id.as_deref(), Vec::new(), Vec::new(), events_root))
    }
}
