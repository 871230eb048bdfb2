//! Tools the agent can call: the [`Tool`] trait, the [`ToolContext`] a call runs in, and the
//! per-thread workspace tools (`ls`, `read_file`, `write_file`, `str_replace`, `bash`).
//!
//! Workspace invariants: every thread works in `<root>/<thread_id>`; the file tools resolve a
//! path only if it stays inside that directory — `..` components are refused, absolute paths
//! must already point inside it, and the deepest existing ancestor is canonicalized so a
//! symlink that leads out is refused too. `bash` runs *in* the thread directory with a timeout
//! and an output cap, but it is a shell with the server's rights, not a sandbox: switch it off
//! ([`WorkspaceOptions::bash`]) where that matters.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use antler_graph::CancellationToken;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;

use crate::chat::ToolSpec;
use crate::config::ModelEntry;

/// A failed tool call; the text goes back to the model in an error `ToolMessage`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    /// New error.
    pub fn new(msg: impl Into<String>) -> Self {
        ToolError(msg.into())
    }
}

/// Receives values for the run's `custom` stream mode.
pub type CustomWriter = Arc<dyn Fn(Value) + Send + Sync>;

/// What a tool call can see: the thread, its workspace, cancellation, the run's model and
/// configurable map, a writer to the `custom` stream, and a sink for the usage of model calls
/// made outside the conversation (subagents), which the agent reports under `llm_usage`.
#[derive(Clone)]
pub struct ToolContext {
    /// Thread id (empty when the run has none).
    pub thread_id: String,
    workspace: Result<PathBuf, String>,
    /// Cancelled when the run is.
    pub cancel: CancellationToken,
    /// The run's `configurable` map.
    pub config: Map<String, Value>,
    /// The model of the run (what subagents use by default).
    pub model: Option<ModelEntry>,
    custom: Option<CustomWriter>,
    usage: Arc<Mutex<Vec<Value>>>,
    /// The graph task running the tool, when there is one: a subagent streams its own work
    /// under a namespace below it.
    pub node: Option<antler_graph::NodeContext>,
}

impl ToolContext {
    /// A context with no workspace.
    pub fn new(thread_id: &str, cancel: CancellationToken) -> Self {
        Self {
            thread_id: thread_id.to_string(),
            workspace: Err("workspace tools are not enabled".into()),
            cancel,
            config: Map::new(),
            model: None,
            custom: None,
            usage: Arc::new(Mutex::new(Vec::new())),
            node: None,
        }
    }

    /// Sets the workspace directory (or why there is none).
    pub fn with_workspace(mut self, dir: Result<PathBuf, String>) -> Self {
        self.workspace = dir;
        self
    }

    /// Sets the graph task running the tool (its `custom` writer too).
    pub fn with_node(mut self, ctx: antler_graph::NodeContext) -> Self {
        let writer = ctx.clone();
        self.custom = Some(Arc::new(move |v| writer.write_custom(v)));
        self.node = Some(ctx);
        self
    }

    /// Sets the `custom` stream writer.
    pub fn with_custom_writer(mut self, w: CustomWriter) -> Self {
        self.custom = Some(w);
        self
    }

    /// The thread's workspace directory (canonical).
    pub fn workspace(&self) -> Result<&Path, ToolError> {
        self.workspace.as_deref().map_err(|e| ToolError(e.clone()))
    }

    /// Writes to the `custom` stream mode (no-op without a writer).
    pub fn write_custom(&self, v: Value) {
        if let Some(w) = &self.custom {
            w(v);
        }
    }

    /// Records an AI message of a model call made by a tool (token accounting).
    pub fn record_usage(&self, ai_message: &Value) {
        self.usage.lock().push(usage_record(ai_message));
    }

    /// Takes the recorded usage.
    pub fn take_usage(&self) -> Vec<Value> {
        std::mem::take(&mut *self.usage.lock())
    }
}

/// The accounting form of an AI message: type, caller, model, usage and id; no content.
pub fn usage_record(m: &Value) -> Value {
    json!({
        "type": "ai",
        "id": m.get("id").cloned().unwrap_or(Value::Null),
        "additional_kwargs": {"caller": m.pointer("/additional_kwargs/caller").cloned().unwrap_or(json!("lead_agent"))},
        "response_metadata": {"model_name": m.pointer("/response_metadata/model_name").cloned().unwrap_or(Value::Null)},
        "usage_metadata": m.get("usage_metadata").cloned().unwrap_or(Value::Null),
    })
}

/// A tool the model can call.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Function name (unique among the agent's tools).
    fn name(&self) -> &str;
    /// What it does (shown to the model).
    fn description(&self) -> String;
    /// JSON schema of the arguments.
    fn parameters(&self) -> Value;
    /// Runs the tool. Errors become error `ToolMessage`s, not run failures.
    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError>;

    /// The spec sent to the model.
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name().to_string(),
            description: self.description(),
            parameters: self.parameters(),
        }
    }
}

// ---------------------------------------------------------------- args

fn str_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, ToolError> {
    match args.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ToolError(format!("missing required argument `{key}`"))),
        Some(_) => Err(ToolError(format!("argument `{key}` must be a string"))),
    }
}

fn opt_str_arg<'a>(args: &'a Value, key: &str) -> Result<Option<&'a str>, ToolError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ToolError(format!("argument `{key}` must be a string"))),
    }
}

fn opt_bool_arg(args: &Value, key: &str) -> Result<bool, ToolError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ToolError(format!("argument `{key}` must be true or false"))),
    }
}

fn opt_u64_arg(args: &Value, key: &str) -> Result<Option<u64>, ToolError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| ToolError(format!("argument `{key}` must be a non-negative integer"))),
        Some(_) => Err(ToolError(format!(
            "argument `{key}` must be a non-negative integer"
        ))),
    }
}

// ---------------------------------------------------------------- workspace

/// Options of the workspace tools.
#[derive(Clone, Debug)]
pub struct WorkspaceOptions {
    /// Parent of the per-thread directories.
    pub root: PathBuf,
    /// Whether the `bash` tool is offered.
    pub bash: bool,
    /// Timeout of one `bash` command.
    pub bash_timeout: Duration,
    /// Cap of a tool's output (bytes) — longer output is cut with a note.
    pub max_output: usize,
}

impl WorkspaceOptions {
    /// Defaults: bash on, 60 s timeout, 64 KiB output.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            bash: true,
            bash_timeout: Duration::from_secs(60),
            max_output: 64 * 1024,
        }
    }
}

/// Per-thread workspaces under a root directory.
#[derive(Clone, Debug)]
pub struct Workspace {
    opts: WorkspaceOptions,
}

/// Whether `id` is a safe thread directory name (`[A-Za-z0-9_-]{1,64}`).
pub fn valid_thread_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Workspace {
    /// Workspaces under `opts.root`.
    pub fn new(opts: WorkspaceOptions) -> Self {
        Self { opts }
    }

    /// The options.
    pub fn options(&self) -> &WorkspaceOptions {
        &self.opts
    }

    /// `<root>/@<owner>/<thread_id>`, created if needed, canonical. Thread ids are per owner
    /// (two users may both have a thread `X`), so every user has a directory of their own;
    /// the `@` keeps it apart from the `<root>/<thread_id>` directories of earlier versions
    /// (see [`Workspace::legacy_dirs`]).
    pub fn thread_dir(&self, owner: &str, thread_id: &str) -> Result<PathBuf, String> {
        if !valid_thread_id(thread_id) {
            return Err(format!(
                "thread id '{thread_id}' cannot name a workspace directory ([A-Za-z0-9_-]{{1,64}})"
            ));
        }
        let dir = self.owner_dir(owner)?.join(thread_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the workspace directory: {e}"))?;
        dir.canonicalize()
            .map_err(|e| format!("cannot resolve the workspace directory: {e}"))
    }

    /// `<root>/@<owner>`: owners are user ids (1-128 characters of `A-Za-z0-9_.@+-`).
    fn owner_dir(&self, owner: &str) -> Result<PathBuf, String> {
        let ok = !owner.is_empty()
            && owner.len() <= 128
            && owner.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'+' | b'-')
            });
        if !ok {
            return Err(format!(
                "user id '{owner}' cannot name a workspace directory"
            ));
        }
        Ok(self.opts.root.join(format!("@{owner}")))
    }

    /// Removes `owner`'s directory of the thread (when the thread is deleted); returns whether
    /// there was one.
    pub fn remove_thread_dir(&self, owner: &str, thread_id: &str) -> Result<bool, String> {
        if !valid_thread_id(thread_id) {
            return Ok(false);
        }
        let dir = self.owner_dir(owner)?.join(thread_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
        }
    }

    /// The thread directories of earlier versions (`<root>/<thread_id>`, from before thread
    /// ids were per owner): `(thread_id, path)`.
    pub fn legacy_dirs(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.opts.root) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                valid_thread_id(&name).then(|| (name, e.path()))
            })
            .collect()
    }

    /// Moves an earlier version's `<root>/<thread_id>` under `owner` (whose thread it was).
    /// Leaves it where it is if `owner` already has a directory for the thread.
    pub fn adopt_legacy_dir(&self, owner: &str, thread_id: &str) -> Result<bool, String> {
        let from = self.opts.root.join(thread_id);
        let parent = self.owner_dir(owner)?;
        let to = parent.join(thread_id);
        if !valid_thread_id(thread_id) || !from.is_dir() || to.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        std::fs::rename(&from, &to)
            .map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))?;
        Ok(true)
    }

    /// The tools: `ls`, `read_file`, `write_file`, `str_replace`, and `bash` when enabled.
    pub fn tools(&self) -> Vec<Arc<dyn Tool>> {
        let max = self.opts.max_output;
        let mut v: Vec<Arc<dyn Tool>> = vec![
            Arc::new(LsTool),
            Arc::new(ReadFileTool { max_output: max }),
            Arc::new(WriteFileTool),
            Arc::new(StrReplaceTool),
        ];
        if self.opts.bash {
            v.push(Arc::new(BashTool {
                timeout: self.opts.bash_timeout,
                max_output: max,
            }));
        }
        v
    }
}

/// Resolves `user_path` inside the (canonical) workspace `root`, refusing escapes.
pub fn resolve_path(root: &Path, user_path: &str) -> Result<PathBuf, ToolError> {
    let trimmed = user_path.trim();
    if trimmed.contains('\0') {
        return Err(ToolError("path contains a NUL byte".into()));
    }
    let p = Path::new(if trimmed.is_empty() { "." } else { trimmed });
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(ToolError(format!(
            "path '{user_path}' contains '..': paths must stay inside the workspace"
        )));
    }
    let joined = if p.is_absolute() {
        if !p.starts_with(root) {
            return Err(ToolError(format!(
                "absolute path '{user_path}' is outside the workspace; use a path relative to the workspace"
            )));
        }
        p.to_path_buf()
    } else {
        root.join(p)
    };
    // canonicalize the deepest existing ancestor: a symlink on the way must not lead out
    let mut existing = joined.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let canon = existing.canonicalize().map_err(|_| {
        ToolError(format!(
            "path '{user_path}' cannot be resolved (a dangling symlink?)"
        ))
    })?;
    if !canon.starts_with(root) {
        return Err(ToolError(format!(
            "path '{user_path}' resolves outside the workspace (through a symlink)"
        )));
    }
    let mut out = canon;
    for part in rest.into_iter().rev() {
        out.push(part);
    }
    Ok(out)
}

fn display(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[output truncated: {} of {} bytes shown]",
        &s[..end],
        end,
        s.len()
    )
}

fn io_err(what: &str, shown: &str, e: std::io::Error) -> ToolError {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    ToolError(format!("cannot {what} '{shown}': {reason}"))
}

struct LsTool;

#[async_trait]
impl Tool for LsTool {
    fn name(&self) -> &str {
        "ls"
    }
    fn description(&self) -> String {
        "List the files and directories at a path of the workspace (default: the workspace root)."
            .into()
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {
            "path": {"type": "string", "description": "Directory relative to the workspace (default \".\")"}
        }})
    }
    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let root = ctx.workspace()?;
        let raw = opt_str_arg(&args, "path")?.unwrap_or(".");
        let dir = resolve_path(root, raw)?;
        let shown = display(root, &dir);
        let mut rd = tokio::fs::read_dir(&dir)
            .await
            .map_err(|e| io_err("list", &shown, e))?;
        let mut entries = Vec::new();
        while let Some(e) = rd
            .next_entry()
            .await
            .map_err(|e| io_err("list", &shown, e))?
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().await.ok();
            match meta {
                Some(m) if m.is_dir() => entries.push(format!("{name}/")),
                Some(m) => entries.push(format!("{name} ({} bytes)", m.len())),
                None => entries.push(name),
            }
        }
        entries.sort();
        if entries.is_empty() {
            return Ok(format!("{shown}: (empty directory)"));
        }
        let total = entries.len();
        entries.truncate(500);
        let mut out = entries.join("\n");
        if total > 500 {
            out.push_str(&format!("\n[{} more entries not shown]", total - 500));
        }
        Ok(out)
    }
}

struct ReadFileTool {
    max_output: usize,
}

#[async_trait]
impl Tool for ReadFileTool {
    fn name(&self) -> &str {
        "read_file"
    }
    fn description(&self) -> String {
        "Read a text file of the workspace, optionally a range of lines (1-based, inclusive)."
            .into()
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {
            "path": {"type": "string", "description": "File path relative to the workspace"},
            "start_line": {"type": "integer", "minimum": 1},
            "end_line": {"type": "integer", "minimum": 1},
        }, "required": ["path"]})
    }
    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let root = ctx.workspace()?;
        let raw = str_arg(&args, "path")?;
        let path = resolve_path(root, raw)?;
        let shown = display(root, &path);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| io_err("read", &shown, e))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ToolError(format!("'{shown}' is not a UTF-8 text file")))?;
        let start = opt_u64_arg(&args, "start_line")?;
        let end = opt_u64_arg(&args, "end_line")?;
        let text = if start.is_some() || end.is_some() {
            let s = start.unwrap_or(1).max(1) as usize;
            let e = end.map_or(usize::MAX, |e| e as usize);
            if e < s {
                return Err(ToolError("end_line is before start_line".into()));
            }
            text.lines()
                .skip(s - 1)
                .take(e.saturating_sub(s).saturating_add(1))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text
        };
        Ok(cut(&text, self.max_output))
    }
}

struct WriteFileTool;

#[async_trait]
impl Tool for WriteFileTool {
    fn name(&self) -> &str {
        "write_file"
    }
    fn description(&self) -> String {
        "Write text to a file of the workspace (creating parent directories); overwrites unless append is true.".into()
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {
            "path": {"type": "string", "description": "File path relative to the workspace"},
            "content": {"type": "string"},
            "append": {"type": "boolean", "description": "Append instead of overwrite"},
        }, "required": ["path", "content"]})
    }
    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let root = ctx.workspace()?;
        let raw = str_arg(&args, "path")?;
        let content = str_arg(&args, "content")?;
        let append = opt_bool_arg(&args, "append")?;
        let path = resolve_path(root, raw)?;
        let shown = display(root, &path);
        if path == root || path.is_dir() {
            return Err(ToolError(format!("'{shown}' is a directory")));
        }
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_err("create the directory of", &shown, e))?;
            // the directories just created are inside; re-check against a racing symlink
            resolve_path(root, raw)?;
        }
        if append {
            use tokio::io::AsyncWriteExt;
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .map_err(|e| io_err("open", &shown, e))?;
            f.write_all(content.as_bytes())
                .await
                .map_err(|e| io_err("write", &shown, e))?;
            Ok(format!("Appended {} bytes to {shown}", content.len()))
        } else {
            tokio::fs::write(&path, content)
                .await
                .map_err(|e| io_err("write", &shown, e))?;
            Ok(format!("Wrote {} bytes to {shown}", content.len()))
        }
    }
}

struct StrReplaceTool;

#[async_trait]
impl Tool for StrReplaceTool {
    fn name(&self) -> &str {
        "str_replace"
    }
    fn description(&self) -> String {
        "Replace a string in a workspace file. old_str must occur exactly once unless replace_all is true.".into()
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {
            "path": {"type": "string"},
            "old_str": {"type": "string"},
            "new_str": {"type": "string"},
            "replace_all": {"type": "boolean"},
        }, "required": ["path", "old_str", "new_str"]})
    }
    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let root = ctx.workspace()?;
        let raw = str_arg(&args, "path")?;
        let old = str_arg(&args, "old_str")?;
        let new = str_arg(&args, "new_str")?;
        let all = opt_bool_arg(&args, "replace_all")?;
        if old.is_empty() {
            return Err(ToolError("old_str must not be empty".into()));
        }
        let path = resolve_path(root, raw)?;
        let shown = display(root, &path);
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| io_err("read", &shown, e))?;
        let count = text.matches(old).count();
        let updated = match (count, all) {
            (0, _) => return Err(ToolError(format!("old_str was not found in '{shown}'"))),
            (1, _) | (_, true) => text.replace(old, new),
            (n, false) => {
                return Err(ToolError(format!(
                    "old_str occurs {n} times in '{shown}'; make it unique or set replace_all"
                )));
            }
        };
        tokio::fs::write(&path, updated)
            .await
            .map_err(|e| io_err("write", &shown, e))?;
        Ok(format!("Replaced {count} occurrence(s) in {shown}"))
    }
}

struct BashTool {
    timeout: Duration,
    max_output: usize,
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    r: Option<R>,
    cap: usize,
) -> (Vec<u8>, usize) {
    let Some(mut r) = r else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, total)
}

fn shown_output(bytes: &[u8], total: usize) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if total > bytes.len() {
        s.push_str(&format!(
            "\n[output truncated: {} of {total} bytes shown]",
            bytes.len()
        ));
    }
    s
}

/// Kills the command's process group (it was started as the leader of its own group), so
/// background children die with it.
fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    #[cfg(not(unix))]
    let _ = pid;
}

#[async_trait]
impl Tool for BashTool {
    fn name(&self) -> &str {
        "bash"
    }
    fn description(&self) -> String {
        format!(
            "Run a bash command in the workspace directory (timeout {}s; output capped). Returns stdout, stderr and the exit code.",
            self.timeout.as_secs()
        )
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {
            "command": {"type": "string", "description": "The command line"},
        }, "required": ["command"]})
    }
    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let root = ctx.workspace()?.to_path_buf();
        let command = str_arg(&args, "command")?;
        if command.trim().is_empty() {
            return Err(ToolError("command is empty".into()));
        }
        let spawn = |shell: &str| {
            let mut cmd = tokio::process::Command::new(shell);
            cmd.arg("-c")
                .arg(command)
                .current_dir(&root)
                .env("PWD", &root)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            #[cfg(unix)]
            cmd.process_group(0);
            cmd.spawn()
        };
        let mut child = match spawn("bash") {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                spawn("sh").map_err(|e| ToolError(format!("cannot start a shell: {e}")))?
            }
            Err(e) => return Err(ToolError(format!("cannot start bash: {e}"))),
        };
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let cap = self.max_output;
        let run = async {
            let (out, err, status) = tokio::join!(
                read_capped(stdout, cap),
                read_capped(stderr, cap),
                child.wait()
            );
            (out, err, status)
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.timeout, run) => Some(r),
            _ = ctx.cancel.cancelled() => None,
        };
        match outcome {
            None => {
                kill_group(pid);
                Err(ToolError("command cancelled".into()))
            }
            Some(Err(_)) => {
                kill_group(pid);
                Err(ToolError(format!(
                    "command timed out after {}s and was killed",
                    self.timeout.as_secs_f64()
                )))
            }
            Some(Ok(((out, out_total), (err, err_total), status))) => {
                let status = status
                    .map_err(|e| ToolError(format!("waiting for the command failed: {e}")))?;
                let mut text = shown_output(&out, out_total);
                if err_total > 0 {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str("[stderr]\n");
                    text.push_str(&shown_output(&err, err_total));
                }
                let code = status
                    .code()
                    .map_or("killed by a signal".to_string(), |c| c.to_string());
                if !status.success() {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(&format!("[exit code: {code}]"));
                }
                if text.is_empty() {
                    text = "(no output)".into();
                }
                Ok(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_path_refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(WorkspaceOptions::new(tmp.path()));
        let root = ws.thread_dir("alice", "t1").unwrap();
        assert_eq!(root, tmp.path().canonicalize().unwrap().join("@alice/t1"));
        // bob's thread t1 is another directory
        let bobs = ws.thread_dir("bob", "t1").unwrap();
        assert_ne!(bobs, root);
        assert!(resolve_path(&root, "../../@bob/t1/x").is_err());
        assert_eq!(
            resolve_path(&root, "a/b.txt").unwrap(),
            root.join("a/b.txt")
        );
        assert_eq!(resolve_path(&root, "").unwrap(), root);
        assert!(resolve_path(&root, "../t2/x").unwrap_err().0.contains(".."));
        assert!(resolve_path(&root, "a/../../x").is_err());
        assert!(
            resolve_path(&root, "/etc/passwd")
                .unwrap_err()
                .0
                .contains("outside")
        );
        let inside = root.join("ok.txt");
        assert_eq!(
            resolve_path(&root, inside.to_str().unwrap()).unwrap(),
            inside
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
            assert!(
                resolve_path(&root, "etc/passwd")
                    .unwrap_err()
                    .0
                    .contains("symlink")
            );
            assert!(resolve_path(&root, "etc").is_err());
        }
        assert!(ws.thread_dir("alice", "../x").is_err());
        assert!(ws.thread_dir("alice", "").is_err());
        assert!(ws.thread_dir("", "t1").is_err());
        assert!(ws.thread_dir("a/b", "t1").is_err());
        assert!(ws.thread_dir("..", "t1").is_ok(), "@.. is a plain name");
        // removing bob's t1 leaves alice's
        std::fs::write(bobs.join("x"), "b").unwrap();
        assert!(ws.remove_thread_dir("bob", "t1").unwrap());
        assert!(!bobs.exists() && root.exists());
        assert!(!ws.remove_thread_dir("bob", "t1").unwrap(), "already gone");
        assert!(
            !ws.remove_thread_dir("bob", "../alice").unwrap(),
            "never outside"
        );
    }

    #[test]
    fn legacy_thread_dirs_move_under_their_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(WorkspaceOptions::new(tmp.path()));
        std::fs::create_dir_all(tmp.path().join("t1")).unwrap();
        std::fs::write(tmp.path().join("t1/notes.txt"), "kept").unwrap();
        ws.thread_dir("bob", "t2").unwrap();
        let legacy = ws.legacy_dirs();
        assert_eq!(
            legacy.len(),
            1,
            "{legacy:?} (owner directories are not legacy)"
        );
        assert_eq!(legacy[0].0, "t1");
        assert!(ws.adopt_legacy_dir("alice", "t1").unwrap());
        let dir = ws.thread_dir("alice", "t1").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "kept"
        );
        assert!(ws.legacy_dirs().is_empty());
        assert!(
            !ws.adopt_legacy_dir("alice", "t1").unwrap(),
            "nothing left to move"
        );
    }
}
