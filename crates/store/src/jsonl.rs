//! [`RunEventStore`] on JSON Lines files (`run_events.backend: jsonl`, after DeerFlow's
//! layout): thread ids are per owner, so each owner's thread has its own directory
//! `{base}/threads/{thread_id}/@{owner}/`, where `events.jsonl` holds one event per line (with
//! its owner) and `seq` the last sequence number handed out, so seqs never repeat even after
//! deletes or a restart. Earlier versions kept one directory per thread id
//! (`{base}/threads/{thread_id}/events.jsonl` + `seq`): [`JsonlRunEventStore::open`] splits
//! such a file by owner, each owner keeping the thread's last seq, once (then it leaves the
//! marker `{base}/threads/.per-owner`, so later starts do not walk every thread).
//!
//! One process owns the directory (seqs are allocated under an in-process lock per thread).
//! Appends are one `write` of whole lines followed by `fsync`, so an acknowledged batch survives
//! a crash; a torn last line left by a crash mid-write is ignored on read. Deletes rewrite the
//! file (write to a temporary file, then rename).

use crate::ids::{Owner, RunId, ThreadId};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{StoreError, StoreResult};
use crate::memory::window;
use crate::records::{NewRunEvent, RunEvent};
use crate::time;
use crate::traits::{RunEventQuery, RunEventStore};

/// JSONL-backed run events.
pub struct JsonlRunEventStore {
    base: PathBuf,
    /// Per-thread lock (and cached last seq once read).
    threads: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<i64>>>>>,
}

/// One stored line.
#[derive(Serialize, Deserialize)]
struct Line {
    owner: String,
    run_id: String,
    seq: i64,
    event_type: String,
    category: String,
    content: Value,
    metadata: Value,
    #[serde(with = "time::serde_micros")]
    created_at: DateTime<Utc>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("run events: cannot {what} {}: {e}", path.display()))
}

impl JsonlRunEventStore {
    /// A store rooted at `base` (created when needed).
    pub fn open(base: impl Into<PathBuf>) -> StoreResult<Self> {
        let base = base.into();
        let threads = base.join("threads");
        std::fs::create_dir_all(&threads).map_err(|e| io("create", &base, e))?;
        // once: after the split, nothing writes the old layout again (thread ids never start
        // with '.', so the marker names no thread)
        let marker = threads.join(".per-owner");
        if !marker.exists() {
            for entry in std::fs::read_dir(&threads).map_err(|e| io("read", &threads, e))? {
                let dir = entry.map_err(|e| io("read", &threads, e))?.path();
                if dir.is_dir() {
                    split_by_owner(&dir)?;
                }
            }
            replace(
                &marker,
                b"thread directories hold one directory per owner\n",
            )?;
        }
        Ok(Self {
            base,
            threads: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// `{base}/threads/{thread_id}/@{owner}`.
    fn dir(&self, owner: &str, thread_id: &str) -> StoreResult<PathBuf> {
        // ids become path segments: nothing that could leave the base directory
        let safe = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && s.len() <= 255
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b) || extra.contains(&b))
        };
        if !safe(thread_id, b":") || thread_id.starts_with('.') {
            return Err(StoreError::InvalidArgument(format!(
                "thread id {thread_id:?} cannot name a run-event file"
            )));
        }
        if !safe(owner, b"@+") {
            return Err(StoreError::InvalidArgument(format!(
                "owner {owner:?} cannot name a run-event file"
            )));
        }
        Ok(self
            .base
            .join("threads")
            .join(thread_id)
            .join(format!("@{owner}")))
    }

    fn lock(&self, owner: &str, thread_id: &str) -> Arc<tokio::sync::Mutex<Option<i64>>> {
        self.threads
            .lock()
            .entry(antler_graph::thread_key(owner, thread_id))
            .or_default()
            .clone()
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Backend(format!("run events: worker failed: {e}")))?
    }
}

/// Every intact line of a thread's file (a torn or corrupt line is skipped).
fn read_lines(dir: &Path) -> StoreResult<Vec<Line>> {
    let path = dir.join("events.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", &path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .collect())
}

fn last_seq(dir: &Path) -> StoreResult<i64> {
    let path = dir.join("seq");
    let recorded = match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<i64>().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io("read", &path, e)),
    };
    // the events themselves win over a seq file a crash left behind
    let seen = read_lines(dir)?.iter().map(|l| l.seq).max().unwrap_or(0);
    Ok(recorded.max(seen))
}

/// Moves the events of an earlier version's thread directory (one file for the thread id,
/// lines tagged with their owner) into one directory per owner; every owner keeps the
/// thread's last seq, so none is handed out twice. Safe to repeat after a crash part-way: the
/// old files go last.
fn split_by_owner(thread_dir: &Path) -> StoreResult<()> {
    let events = thread_dir.join("events.jsonl");
    let seq = thread_dir.join("seq");
    if !events.exists() && !seq.exists() {
        return Ok(());
    }
    let last = last_seq(thread_dir)?;
    let mut by_owner: Vec<(String, Vec<u8>)> = Vec::new();
    for l in read_lines(thread_dir)? {
        let mut bytes = serde_json::to_vec(&l).map_err(|e| StoreError::Backend(e.to_string()))?;
        bytes.push(b'\n');
        match by_owner.iter_mut().find(|(o, _)| *o == l.owner) {
            Some((_, v)) => v.extend(bytes),
            None => by_owner.push((l.owner.clone(), bytes)),
        }
    }
    for (owner, bytes) in by_owner {
        let dir = thread_dir.join(format!("@{owner}"));
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        replace(&dir.join("events.jsonl"), &bytes)?;
        replace(&dir.join("seq"), last.to_string().as_bytes())?;
    }
    for old in [events, seq] {
        match std::fs::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &old, e)),
        }
    }
    Ok(())
}

/// Whether the file is non-empty and does not end with a newline.
fn ends_torn(f: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// Replaces `path` atomically with `bytes`.
fn replace(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| io("write", &tmp, e))?;
    f.sync_data().map_err(|e| io("sync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename", path, e))
}

fn to_event(thread_id: &str, l: Line) -> RunEvent {
    RunEvent {
        thread_id: thread_id.to_string(),
        run_id: l.run_id,
        seq: l.seq,
        event_type: l.event_type,
        category: l.category,
        content: l.content,
        metadata: l.metadata,
        created_at: l.created_at,
    }
}

fn matches(l: &Line, owner: &str, q: &RunEventQuery) -> bool {
    l.owner == owner
        && q.run_id.as_ref().is_none_or(|r| &l.run_id == r)
        && q.category.as_ref().is_none_or(|c| &l.category == c)
        && (q.event_types.is_empty() || q.event_types.iter().any(|t| t == &l.event_type))
}

/// Rewrites a thread's file keeping the lines `keep` accepts; returns how many were dropped.
fn rewrite(dir: &Path, keep: impl Fn(&Line) -> bool) -> StoreResult<u64> {
    let lines = read_lines(dir)?;
    let before = lines.len();
    let mut out = Vec::new();
    let mut kept = 0;
    for l in lines.iter().filter(|l| keep(l)) {
        serde_json::to_writer(&mut out, l).map_err(|e| StoreError::Backend(e.to_string()))?;
        out.push(b'\n');
        kept += 1;
    }
    if kept == before {
        return Ok(0);
    }
    replace(&dir.join("events.jsonl"), &out)?;
    Ok((before - kept) as u64)
}

#[async_trait::async_trait]
impl RunEventStore for JsonlRunEventStore {
    async fn append_batch(
        &self,
        owner: Owner<'_>,
        events: Vec<NewRunEvent>,
    ) -> StoreResult<Vec<RunEvent>> {
        // grouped by thread (one lock and one append each), results in the input's order
        let mut by_thread: Vec<(String, Vec<(usize, NewRunEvent)>)> = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            match by_thread.iter_mut().find(|(t, _)| *t == e.thread_id) {
                Some((_, v)) => v.push((i, e)),
                None => by_thread.push((e.thread_id.clone(), vec![(i, e)])),
            }
        }
        let mut out: Vec<(usize, RunEvent)> = Vec::new();
        for (thread_id, batch) in by_thread {
            let dir = self.dir(owner.as_str(), &thread_id)?;
            let lock = self.lock(owner.as_str(), &thread_id);
            let mut cached = lock.lock().await;
            let known = *cached;
            let owner = owner.to_string();
            let tid = thread_id.clone();
            let (stored, last) = Self::blocking(move || {
                std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
                let mut seq = match known {
                    Some(s) => s,
                    None => last_seq(&dir)?,
                };
                let mut bytes = Vec::new();
                let mut stored = Vec::with_capacity(batch.len());
                for (i, e) in batch {
                    seq += 1;
                    let line = Line {
                        owner: owner.clone(),
                        run_id: e.run_id,
                        seq,
                        event_type: e.event_type,
                        category: e.category,
                        content: e.content,
                        metadata: e.metadata,
                        created_at: time::truncate(e.created_at),
                    };
                    serde_json::to_writer(&mut bytes, &line)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    bytes.push(b'\n');
                    stored.push((i, to_event(&tid, line)));
                }
                let path = dir.join("events.jsonl");
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io("open", &path, e))?;
                if ends_torn(&mut f).map_err(|e| io("read", &path, e))? {
                    // a crash left half a line: end it, so it stays one (ignored) line
                    bytes.insert(0, b'\n');
                }
                f.write_all(&bytes).map_err(|e| io("append to", &path, e))?;
                f.sync_data().map_err(|e| io("sync", &path, e))?;
                replace(&dir.join("seq"), seq.to_string().as_bytes())?;
                Ok((stored, seq))
            })
            .await?;
            *cached = Some(last);
            out.extend(stored);
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }

    async fn list(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        q: &RunEventQuery,
    ) -> StoreResult<Vec<RunEvent>> {
        let dir = self.dir(owner.as_str(), thread_id.as_str())?;
        let (owner, q2, tid) = (owner.to_string(), q.clone(), thread_id.to_string());
        let events = Self::blocking(move || {
            Ok(read_lines(&dir)?
                .into_iter()
                .filter(|l| matches(l, &owner, &q2))
                .map(|l| to_event(&tid, l))
                .collect::<Vec<_>>())
        })
        .await?;
        Ok(window(events, q))
    }

    async fn count(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: Option<RunId<'_>>,
        category: Option<&str>,
    ) -> StoreResult<u64> {
        let q = RunEventQuery {
            run_id: run_id.map(|r| r.to_string()),
            category: category.map(str::to_string),
            ..Default::default()
        };
        Ok(self.list(owner, thread_id, &q).await?.len() as u64)
    }

    async fn delete_thread(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<u64> {
        let dir = self.dir(owner.as_str(), thread_id.as_str())?;
        let lock = self.lock(owner.as_str(), thread_id.as_str());
        let _held = lock.lock().await;
        Self::blocking(move || rewrite(&dir, |_| false)).await
    }

    async fn delete_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<u64> {
        let dir = self.dir(owner.as_str(), thread_id.as_str())?;
        let lock = self.lock(owner.as_str(), thread_id.as_str());
        let _held = lock.lock().await;
        let run_id = run_id.to_string();
        Self::blocking(move || rewrite(&dir, |l| l.run_id != run_id)).await
    }
}
