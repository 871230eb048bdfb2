//! The run's input, applied to the loaded checkpoint before the first superstep: new values,
//! a command (resume values, update, goto), or a null continuation (with a fork for time
//! travel).

use serde_json::{Map, Value, json};

use super::exec::{Exec, ExecError, TaskResult};
use super::pending::Pending;
use super::run_loop::{Loaded, LoopState};
use super::tasks::prepare;
use super::{RESUME, TASKS, branch};
use crate::types::{
    Command, END, GraphError, Interrupt, NodeOutput, Route, RunInput, RunOutcome, START, StreamMode,
};

/// A null input is a continuation, as on the wire; a command without resume on a thread
/// without checkpoints is its update as input.
fn normalize(input: RunInput, has_checkpoint: bool) -> RunInput {
    match input {
        RunInput::Values(Value::Null) => RunInput::Null,
        RunInput::Command(cmd) if !has_checkpoint && cmd.resume.is_none() => {
            RunInput::Values(cmd.update.unwrap_or(Value::Null))
        }
        other => other,
    }
}

/// `resume` as a map from interrupt id to value, when every key names an open interrupt.
fn resume_by_id(resume: &Value, open: &[(String, Vec<Interrupt>)]) -> Option<Map<String, Value>> {
    match resume {
        Value::Object(m)
            if !m.is_empty()
                && m.keys()
                    .all(|k| open.iter().any(|(_, is)| is.iter().any(|i| &i.id == k))) =>
        {
            Some(m.clone())
        }
        _ => None,
    }
}

impl Exec {
    /// Applies the input to the loaded state. `Some` when the run ends there: a command or a
    /// continuation on a thread without checkpoints.
    pub(super) async fn apply_input(
        &self,
        st: &mut LoopState,
        loaded: &Loaded,
        input: RunInput,
    ) -> Result<Option<RunOutcome>, ExecError> {
        match normalize(input, st.cur_id.is_some()) {
            RunInput::Values(v) => {
                self.apply_values(st, v).await?;
                Ok(None)
            }
            RunInput::Command(cmd) => self.apply_command(st, loaded, cmd).await,
            RunInput::Null => self.continue_run(st, loaded).await,
        }
    }

    /// New input: discards the unfinished tasks of the current checkpoint, then saves the
    /// `input` checkpoint that holds `v` in `__start__`.
    async fn apply_values(&self, st: &mut LoopState, v: Value) -> Result<(), ExecError> {
        let gi = self.g();
        if let Some(id) = &st.cur_id {
            let old = prepare(gi, &st.ch, id, st.cur_step + 1, &self.ns);
            let version = st.ch.next_version();
            st.ch.consume(gi, &old, version);
        }
        st.pending = Pending::default();
        let step = if st.cur_id.is_some() {
            st.cur_step + 1
        } else {
            -1
        };
        let version = st.ch.next_version();
        let w = vec![(START.to_string(), v)];
        let updated = st.ch.apply(gi, &[&w], false, version)?;
        let parent = st.cur_id.clone();
        let id = self
            .save(&st.ch, parent.as_deref(), "input", step, updated, &[])
            .await?;
        self.emit_saved_checkpoint(&st.ch, &id, parent.as_deref(), "input", step);
        st.cur_id = Some(id);
        st.cur_step = step;
        st.stop = step + self.recursion_limit() + 1;
        Ok(())
    }

    /// A command: its resume values answer the open interrupts, its update / goto apply to the
    /// channels; then the run shows the checkpoint it continues from.
    async fn apply_command(
        &self,
        st: &mut LoopState,
        loaded: &Loaded,
        cmd: Command,
    ) -> Result<Option<RunOutcome>, ExecError> {
        st.resumed_first_step = true;
        let Some(id) = st.cur_id.clone() else {
            return Ok(Some(self.finish(&st.ch, None, Vec::new(), Vec::new())));
        };
        if let Some(resume) = &cmd.resume {
            self.write_resumes(st, &id, resume).await?;
        }
        if cmd.update.is_some() || !cmd.goto.is_empty() {
            self.apply_command_update(st, &id, cmd).await?;
        }
        self.emit_resumed(st, loaded);
        Ok(None)
    }

    /// Writes `resume` as the answer to the open interrupts of the checkpoint `id`: to each of
    /// them, or by interrupt id when `resume` maps ids to values.
    async fn write_resumes(
        &self,
        st: &mut LoopState,
        id: &str,
        resume: &Value,
    ) -> Result<(), ExecError> {
        let tasks = prepare(self.g(), &st.ch, id, st.cur_step + 1, &self.ns);
        let open: Vec<(String, Vec<Interrupt>)> = tasks
            .iter()
            .map(|t| (t.id.clone(), st.pending.open_interrupts(&t.id)))
            .filter(|(_, i)| !i.is_empty())
            .collect();
        let by_id = resume_by_id(resume, &open);
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
                let n = st.pending.resume_count(task_id);
                let key = format!("{task_id}~resume~{n}");
                self.put_task_writes(id, &key, &[(RESUME.to_string(), value.clone())])
                    .await?;
                st.pending
                    .resumes
                    .entry(task_id.clone())
                    .or_default()
                    .insert(n, value);
            }
        }
        Ok(())
    }

    /// A command's update and goto, applied to the channels. With a resume they are saved with
    /// the next step (the resumed tasks belong to the checkpoint `id`); else as an `input`
    /// checkpoint.
    async fn apply_command_update(
        &self,
        st: &mut LoopState,
        id: &str,
        cmd: Command,
    ) -> Result<(), ExecError> {
        let with_resume = cmd.resume.is_some();
        let writes = self.command_writes(cmd)?;
        let version = st.ch.next_version();
        let updated = st.ch.apply(self.g(), &[&writes], false, version)?;
        if with_resume {
            st.pending_new.extend(updated);
            return Ok(());
        }
        let step = st.cur_step + 1;
        let new_id = self
            .save(&st.ch, Some(id), "input", step, updated, &[])
            .await?;
        self.emit_saved_checkpoint(&st.ch, &new_id, Some(id), "input", step);
        st.pending = Pending::default();
        st.cur_id = Some(new_id);
        st.cur_step = step;
        Ok(())
    }

    /// The writes of an input command: its state update, then its goto (unknown targets are
    /// left out).
    fn command_writes(&self, cmd: Command) -> Result<Vec<(String, Value)>, ExecError> {
        let gi = self.g();
        let cmd = Command { graph: None, ..cmd };
        let (_, mut writes, goto) = match self.output_writes(NodeOutput::Command(cmd)) {
            Ok(x) => x,
            Err(TaskResult::Failed { kind, message }) => {
                return Err(GraphError { kind, message }.into());
            }
            Err(_) => (Value::Null, Vec::new(), Vec::new()),
        };
        for r in &goto {
            match r {
                Route::To(n) if n != END && gi.node(n).is_some() => {
                    writes.push((branch(n), Value::Null))
                }
                Route::Send { node, arg } if gi.node(node).is_some() => {
                    writes.push((TASKS.to_string(), json!({"node": node, "arg": arg})))
                }
                _ => {}
            }
        }
        Ok(writes)
    }

    /// A null input continues the loaded checkpoint; on time travel its tasks run again.
    async fn continue_run(
        &self,
        st: &mut LoopState,
        loaded: &Loaded,
    ) -> Result<Option<RunOutcome>, ExecError> {
        st.resumed_first_step = true;
        if st.cur_id.is_none() {
            return Ok(Some(self.finish(&st.ch, None, Vec::new(), Vec::new())));
        }
        self.emit_resumed(st, loaded);
        if loaded.time_travel {
            self.fork_for_replay(st, loaded).await?;
        }
        Ok(None)
    }

    /// Time travel: LangGraph re-runs the checkpoint's tasks instead of reusing their old
    /// writes, on a fork (source "fork") unless it is one already.
    async fn fork_for_replay(&self, st: &mut LoopState, loaded: &Loaded) -> Result<(), ExecError> {
        st.pending = Pending::default();
        if loaded.source == "update" || loaded.source == "fork" {
            return Ok(());
        }
        let Some(id) = st.cur_id.clone() else {
            return Ok(());
        };
        let step = st.cur_step + 1;
        let new_id = self
            .save(&st.ch, Some(&id), "fork", step, Vec::new(), &[])
            .await?;
        st.cur_id = Some(new_id);
        st.cur_step = step;
        Ok(())
    }

    /// A resumed run first shows the values, then (as LangGraph does) the checkpoint it
    /// continues from.
    fn emit_resumed(&self, st: &LoopState, loaded: &Loaded) {
        self.emit_values(&st.ch);
        let Some(id) = st.cur_id.as_deref() else {
            return;
        };
        if self.emitter.wants(StreamMode::Checkpoints) || self.emitter.wants(StreamMode::Debug) {
            let next = prepare(self.g(), &st.ch, id, st.cur_step + 1, &self.ns);
            self.emit_checkpoint(
                &st.ch,
                id,
                loaded.parent.as_deref(),
                &loaded.source,
                st.cur_step,
                &next,
                Some(&loaded.meta),
                Some(&st.pending),
            );
        }
    }
}
