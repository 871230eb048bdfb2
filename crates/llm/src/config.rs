//! `models:` configuration, DeerFlow-compatible: [`ModelConfig`] (one entry), [`ModelRegistry`]
//! (the ordered list with a client per model; the first entry is the default) and the JSON of
//! `GET /api/models`.
//!
//! An entry names its provider with `provider: openai | anthropic` or with DeerFlow's
//! `use: "package.module:Class"` (`langchain_openai:ChatOpenAI`,
//! `langchain_anthropic:ChatAnthropic`, `langchain_deepseek:ChatDeepSeek`, ...). Keys this crate
//! does not know are kept in [`ModelConfig::extra`] and sent in the request body (LangChain's
//! `model_kwargs` / `extra_body` are flattened into it), except a few LangChain-only constructor
//! options that are not request fields (see [`IGNORED_KEYS`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::chat::ChatModel;
use crate::error::ConfigError;

/// Which wire protocol a model speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI Chat Completions (OpenAI, DeepSeek, vLLM, OpenRouter, Qwen, ...).
    OpenAi,
    /// Anthropic Messages API.
    Anthropic,
}

impl Provider {
    /// `openai` / `anthropic`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }
}

/// Default per-read timeout when `timeout` is not configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default number of retries.
pub const DEFAULT_MAX_RETRIES: u32 = 2;

/// LangChain constructor options that are not request-body fields: accepted and ignored.
pub const IGNORED_KEYS: &[&str] = &[
    "description",
    "pricing",
    "use_responses_api",
    "output_version",
    "stream_chunk_timeout",
    "stream_usage",
    "streaming",
    "supports_reasoning_effort",
    "organization",
    "default_query",
    "http_client",
    "verbose",
    "tags",
    "metadata",
    "callbacks",
    "cache",
    "rate_limiter",
];

/// One `models:` entry. Its `Debug` form never shows the API key.
#[derive(Clone, PartialEq)]
pub struct ModelConfig {
    /// Id used by `context.model_name`.
    pub name: String,
    /// Shown in UIs.
    pub display_name: Option<String>,
    /// Shown in UIs.
    pub description: Option<String>,
    /// The wire protocol.
    pub provider: Provider,
    /// The `use` value as written, if any.
    pub use_path: Option<String>,
    /// Provider model id.
    pub model: String,
    /// API base URL (`base_url` / `api_base`); provider default when absent.
    pub base_url: Option<String>,
    /// API key (already `$ENV`-substituted by the caller; a leftover `$NAME` is resolved from
    /// the environment at request time).
    pub api_key: Option<String>,
    /// `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// Per-read / connect timeout.
    pub timeout: Duration,
    /// Retries on 429 / 5xx / connection errors (before any chunk was delivered).
    pub max_retries: u32,
    /// Whether `thinking_enabled` applies.
    pub supports_thinking: bool,
    /// Whether `reasoning_effort` applies.
    pub supports_reasoning_effort: bool,
    /// Image input.
    pub supports_vision: bool,
    /// Context window in tokens.
    pub context_window: Option<u64>,
    /// Extra request-body fields when thinking is enabled.
    pub when_thinking_enabled: Map<String, Value>,
    /// Extra request-body fields when thinking is disabled.
    pub when_thinking_disabled: Map<String, Value>,
    /// Extra HTTP headers (`default_headers`).
    pub headers: Vec<(String, String)>,
    /// Unknown keys: merged into the request body.
    pub extra: Map<String, Value>,
}

impl std::fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelConfig")
            .field("name", &self.name)
            .field("display_name", &self.display_name)
            .field("provider", &self.provider)
            .field("use_path", &self.use_path)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("supports_thinking", &self.supports_thinking)
            .field("context_window", &self.context_window)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A string (no number: model ids and URLs are written as strings).
#[derive(Deserialize)]
#[serde(try_from = "Value")]
struct Str(String);

impl TryFrom<Value> for Str {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(Str(s)),
            other => Err(format!("expected a string, got {}", type_name(&other))),
        }
    }
}

/// A non-negative integer (also written as a string).
#[derive(Deserialize)]
#[serde(try_from = "Value")]
struct Count(u64);

impl TryFrom<Value> for Count {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        let expected = "expected a non-negative integer, got";
        match v {
            Value::Number(n) => n.as_u64().map(Count).ok_or(format!("{expected} {n}")),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Count)
                .map_err(|_| format!("{expected} '{s}'")),
            other => Err(format!("{expected} {}", type_name(&other))),
        }
    }
}

/// A finite number (also written as a string).
#[derive(Deserialize)]
#[serde(try_from = "Value")]
struct Real(f64);

impl TryFrom<Value> for Real {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        let n = match &v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            other => return Err(format!("expected a number, got {}", type_name(other))),
        };
        match (n, v) {
            (Some(n), _) if n.is_finite() => Ok(Real(n)),
            (_, Value::String(s)) => Err(format!("expected a number, got '{s}'")),
            (_, v) => Err(format!("expected a number, got {v}")),
        }
    }
}

/// `true` or `false`.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
struct Flag(bool);

impl TryFrom<Value> for Flag {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::Bool(b) => Ok(Flag(b)),
            other => Err(format!("expected true or false, got {}", type_name(&other))),
        }
    }
}

/// A mapping.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
struct Obj(Map<String, Value>);

impl TryFrom<Value> for Obj {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::Object(m) => Ok(Obj(m)),
            other => Err(format!("expected a mapping, got {}", type_name(&other))),
        }
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Provider of a DeerFlow `use` class path.
fn provider_of_use(path: &str) -> Option<Provider> {
    let p = path.to_ascii_lowercase();
    if p.contains("anthropic") || p.contains("claude") {
        return Some(Provider::Anthropic);
    }
    const OPENAI_LIKE: &[&str] = &[
        "openai",
        "deepseek",
        "qwen",
        "tongyi",
        "moonshot",
        "kimi",
        "volcengine",
        "doubao",
        "minimax",
        "openrouter",
        "vllm",
        "litellm",
        "xai",
        "groq",
        "siliconflow",
        "zhipu",
    ];
    OPENAI_LIKE
        .iter()
        .any(|k| p.contains(k))
        .then_some(Provider::OpenAi)
}

/// One `models:` entry as written. Of the aliases (`model` / `model_name`, `base_url` /
/// `api_base` / ..., `timeout` / `request_timeout`) the first one set is used, and only it is
/// checked ([`first`]). The keys the entry does not name are request-body fields
/// ([`ModelConfig::extra`]).
#[derive(Deserialize)]
struct Entry {
    /// Read beforehand, by [`entry_name`], so that every other error names the model.
    #[serde(rename = "name")]
    _name: Option<Value>,
    display_name: Option<Str>,
    description: Option<Str>,
    #[serde(rename = "use")]
    use_path: Option<Str>,
    provider: Option<Str>,
    model: Option<Value>,
    model_name: Option<Value>,
    base_url: Option<Value>,
    api_base: Option<Value>,
    openai_api_base: Option<Value>,
    anthropic_api_url: Option<Value>,
    api_key: Option<Value>,
    openai_api_key: Option<Value>,
    anthropic_api_key: Option<Value>,
    max_tokens: Option<Count>,
    temperature: Option<Real>,
    timeout: Option<Value>,
    request_timeout: Option<Value>,
    max_retries: Option<Count>,
    supports_thinking: Option<Flag>,
    supports_reasoning_effort: Option<Flag>,
    supports_vision: Option<Flag>,
    context_window: Option<Count>,
    when_thinking_enabled: Option<Obj>,
    when_thinking_disabled: Option<Obj>,
    default_headers: Option<Obj>,
    model_kwargs: Option<Obj>,
    extra_body: Option<Obj>,
}

/// The trimmed `name` of an entry.
fn entry_name(o: &Map<String, Value>) -> Result<String, ConfigError> {
    match o.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(ConfigError(
            "a `models:` entry has no `name` (the id used by context.model_name)".into(),
        )),
        Some(other) => Err(ConfigError(format!(
            "a `models:` entry has a `name` that is {}, expected a string",
            type_name(other)
        ))),
    }
}

impl Entry {
    /// Deserializes the entry of model `name`; also returns the keys it does not name.
    fn read(name: &str, v: &Value) -> Result<(Self, Vec<String>), ConfigError> {
        let mut track = serde_path_to_error::Track::new();
        let mut unknown = Vec::new();
        let de = serde_path_to_error::Deserializer::new(v, &mut track);
        match serde_ignored::deserialize(de, |key| unknown.push(key.to_string())) {
            Ok(entry) => Ok((entry, unknown)),
            Err(e) => Err(ConfigError::field(name, &track.path().to_string(), e)),
        }
    }

    /// Validates the values. `unknown`: the other keys of the entry, with their values.
    fn into_config(
        self,
        name: String,
        unknown: Vec<(String, Value)>,
    ) -> Result<ModelConfig, ConfigError> {
        let n = name.as_str();
        let text = |s: Option<Str>| s.map(|Str(s)| s);
        let provider = provider(n, text(self.provider), self.use_path.as_ref())?;
        let model = first::<Str>(n, [("model", self.model), ("model_name", self.model_name)])?
            .map(|(_, Str(m))| m)
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| ConfigError::field(n, "model", "missing: the provider's model id"))?;
        let base_url = first::<Str>(
            n,
            [
                ("base_url", self.base_url),
                ("api_base", self.api_base),
                ("openai_api_base", self.openai_api_base),
                ("anthropic_api_url", self.anthropic_api_url),
            ],
        )?;
        let api_key = first::<Str>(
            n,
            [
                ("api_key", self.api_key),
                ("openai_api_key", self.openai_api_key),
                ("anthropic_api_key", self.anthropic_api_key),
            ],
        )?;
        let timeout = first::<Real>(
            n,
            [
                ("timeout", self.timeout),
                ("request_timeout", self.request_timeout),
            ],
        )?;
        Ok(ModelConfig {
            display_name: text(self.display_name),
            description: text(self.description),
            provider,
            use_path: text(self.use_path),
            model,
            base_url: base_url_of(n, base_url.map(|(_, Str(u))| u))?,
            api_key: api_key.map(|(_, Str(k))| k).filter(|k| !k.is_empty()),
            max_tokens: max_tokens(n, self.max_tokens)?,
            temperature: temperature(n, self.temperature)?,
            timeout: timeout_of(n, timeout)?,
            max_retries: max_retries(n, self.max_retries)?,
            supports_thinking: self.supports_thinking.is_some_and(|Flag(b)| b),
            supports_reasoning_effort: self.supports_reasoning_effort.is_some_and(|Flag(b)| b),
            supports_vision: self.supports_vision.is_some_and(|Flag(b)| b),
            context_window: self.context_window.map(|Count(c)| c),
            when_thinking_enabled: flatten_body_map(map(self.when_thinking_enabled)),
            when_thinking_disabled: flatten_body_map(map(self.when_thinking_disabled)),
            headers: headers(n, map(self.default_headers))?,
            extra: extra(map(self.model_kwargs), map(self.extra_body), unknown),
            name,
        })
    }
}

/// The first of the alias `keys` that is set, as a `T` (an error names that key).
fn first<T: TryFrom<Value, Error = String>>(
    n: &str,
    keys: impl IntoIterator<Item = (&'static str, Option<Value>)>,
) -> Result<Option<(&'static str, T)>, ConfigError> {
    let Some((key, v)) = keys.into_iter().find_map(|(k, v)| v.map(|v| (k, v))) else {
        return Ok(None);
    };
    T::try_from(v)
        .map(|t| Some((key, t)))
        .map_err(|e| ConfigError::field(n, key, e))
}

fn map(m: Option<Obj>) -> Map<String, Value> {
    m.map(|Obj(m)| m).unwrap_or_default()
}

/// `provider:`, else the provider of the `use:` class.
fn provider(
    n: &str,
    provider: Option<String>,
    use_path: Option<&Str>,
) -> Result<Provider, ConfigError> {
    if let Some(p) = provider {
        return match p.trim().to_ascii_lowercase().as_str() {
            "openai" | "openai-compatible" | "openai_compatible" | "deepseek" => {
                Ok(Provider::OpenAi)
            }
            "anthropic" => Ok(Provider::Anthropic),
            other => Err(ConfigError::field(
                n,
                "provider",
                format!("unknown provider '{other}' (expected `openai` or `anthropic`)"),
            )),
        };
    }
    let Some(Str(u)) = use_path else {
        return Err(ConfigError::field(
            n,
            "use",
            "missing: set `use` (e.g. langchain_openai:ChatOpenAI) or `provider` (openai | anthropic)",
        ));
    };
    provider_of_use(u).ok_or_else(|| {
        ConfigError::field(
            n,
            "use",
            format!(
                "unsupported class '{u}': supported are OpenAI-compatible chat models \
                 (e.g. langchain_openai:ChatOpenAI, langchain_deepseek:ChatDeepSeek) \
                 and langchain_anthropic:ChatAnthropic; or set `provider: openai | anthropic`"
            ),
        )
    })
}

/// An http(s) base URL (blank: the provider's default).
fn base_url_of(n: &str, url: Option<String>) -> Result<Option<String>, ConfigError> {
    let url = url.filter(|u| !u.trim().is_empty());
    if let Some(u) = &url {
        let lower = u.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(ConfigError::field(
                n,
                "base_url",
                format!("'{u}' is not an http:// or https:// URL"),
            ));
        }
    }
    Ok(url)
}

fn max_tokens(n: &str, t: Option<Count>) -> Result<Option<u64>, ConfigError> {
    match t {
        Some(Count(0)) => Err(ConfigError::field(n, "max_tokens", "must be at least 1")),
        t => Ok(t.map(|Count(t)| t)),
    }
}

fn temperature(n: &str, t: Option<Real>) -> Result<Option<f64>, ConfigError> {
    match t {
        Some(Real(t)) if !(0.0..=2.0).contains(&t) => Err(ConfigError::field(
            n,
            "temperature",
            format!("{t} is outside 0..=2"),
        )),
        t => Ok(t.map(|Real(t)| t)),
    }
}

/// The timeout in seconds (`timeout` or `request_timeout`), at most a day.
fn timeout_of(n: &str, t: Option<(&str, Real)>) -> Result<Duration, ConfigError> {
    match t {
        None => Ok(DEFAULT_TIMEOUT),
        Some((_, Real(t))) if t > 0.0 && t <= 86_400.0 => Ok(Duration::from_secs_f64(t)),
        Some((key, Real(t))) => Err(ConfigError::field(
            n,
            key,
            format!("{t} seconds is not in (0, 86400]"),
        )),
    }
}

fn max_retries(n: &str, r: Option<Count>) -> Result<u32, ConfigError> {
    match r {
        None => Ok(DEFAULT_MAX_RETRIES),
        Some(Count(r)) if r <= 20 => Ok(r as u32),
        Some(Count(r)) => Err(ConfigError::field(
            n,
            "max_retries",
            format!("{r} is more than 20"),
        )),
    }
}

/// `default_headers`: valid names, string (or number) values.
fn headers(n: &str, m: Map<String, Value>) -> Result<Vec<(String, String)>, ConfigError> {
    let mut headers = Vec::with_capacity(m.len());
    for (k, v) in m {
        match v {
            Value::String(s) => headers.push((k, s)),
            Value::Number(x) => headers.push((k, x.to_string())),
            other => {
                return Err(ConfigError::field(
                    n,
                    "default_headers",
                    format!("header '{k}' is {}, expected a string", type_name(&other)),
                ));
            }
        }
    }
    if let Some((k, _)) = headers
        .iter()
        .find(|(k, _)| ::http::HeaderName::from_bytes(k.as_bytes()).is_err())
    {
        return Err(ConfigError::field(
            n,
            "default_headers",
            format!("'{k}' is not a valid header name"),
        ));
    }
    Ok(headers)
}

/// The extra request-body fields: `model_kwargs`, `extra_body`, then the unknown keys (but
/// not the [`IGNORED_KEYS`]), later ones winning.
fn extra(
    model_kwargs: Map<String, Value>,
    extra_body: Map<String, Value>,
    unknown: Vec<(String, Value)>,
) -> Map<String, Value> {
    let unknown = unknown
        .into_iter()
        .filter(|(k, _)| !IGNORED_KEYS.contains(&k.as_str()));
    model_kwargs
        .into_iter()
        .chain(extra_body)
        .chain(unknown)
        .collect()
}

impl ModelConfig {
    /// Parses and validates one `models:` entry. Errors name the model and the field.
    pub fn from_value(v: &Value) -> Result<Self, ConfigError> {
        let o = v.as_object().ok_or_else(|| {
            ConfigError(format!(
                "a `models:` entry must be a mapping, got {}",
                type_name(v)
            ))
        })?;
        let name = entry_name(o)?;
        let (entry, unknown) = Entry::read(&name, v)?;
        let unknown = unknown
            .into_iter()
            .filter_map(|k| o.get(&k).map(|v| (k, v.clone())))
            .collect();
        entry.into_config(name, unknown)
    }

    /// A minimal OpenAI-compatible entry (tests, programmatic setups).
    pub fn openai(name: &str, model: &str, base_url: &str) -> Self {
        Self::minimal(name, model, base_url, Provider::OpenAi)
    }

    /// A minimal Anthropic entry (tests, programmatic setups).
    pub fn anthropic(name: &str, model: &str, base_url: &str) -> Self {
        Self::minimal(name, model, base_url, Provider::Anthropic)
    }

    fn minimal(name: &str, model: &str, base_url: &str, provider: Provider) -> Self {
        ModelConfig {
            name: name.to_string(),
            display_name: None,
            description: None,
            provider,
            use_path: None,
            model: model.to_string(),
            base_url: Some(base_url.to_string()),
            api_key: None,
            max_tokens: None,
            temperature: None,
            timeout: DEFAULT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            supports_thinking: false,
            supports_reasoning_effort: false,
            supports_vision: false,
            context_window: None,
            when_thinking_enabled: Map::new(),
            when_thinking_disabled: Map::new(),
            headers: Vec::new(),
            extra: Map::new(),
        }
    }

    /// The entry as listed by `GET /api/models`.
    pub fn api_json(&self) -> Value {
        json!({
            "name": self.name,
            "model": self.model,
            "display_name": self.display_name,
            "description": self.description,
            "supports_thinking": self.supports_thinking,
            "supports_reasoning_effort": self.supports_reasoning_effort,
        })
    }

    /// The request-body fields for a thinking mode: `when_thinking_enabled` when thinking is
    /// requested and supported, `when_thinking_disabled` otherwise.
    pub fn thinking_fields(&self, thinking: Option<bool>) -> &Map<String, Value> {
        let on = thinking.unwrap_or(true) && self.supports_thinking;
        if on {
            &self.when_thinking_enabled
        } else {
            &self.when_thinking_disabled
        }
    }
}

/// `extra_body` / `model_kwargs` inside a `when_thinking_*` map are flattened into it.
fn flatten_body_map(m: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in m {
        match (k.as_str(), v) {
            ("extra_body" | "model_kwargs", Value::Object(inner)) => {
                for (ik, iv) in inner {
                    out.insert(ik, iv);
                }
            }
            (_, v) => {
                out.insert(k, v);
            }
        }
    }
    out
}

impl TryFrom<Value> for ModelConfig {
    type Error = ConfigError;
    fn try_from(v: Value) -> Result<Self, Self::Error> {
        ModelConfig::from_value(&v)
    }
}

impl<'de> serde::Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        ModelConfig::from_value(&v).map_err(serde::de::Error::custom)
    }
}

/// A configured model: its config and its client.
#[derive(Clone)]
pub struct ModelEntry {
    /// The config entry.
    pub config: ModelConfig,
    /// The client.
    pub client: Arc<dyn ChatModel>,
}

impl std::fmt::Debug for ModelEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEntry")
            .field("name", &self.config.name)
            .field("provider", &self.config.provider)
            .finish()
    }
}

/// The configured models, in config order; the first is the default.
#[derive(Clone, Debug, Default)]
pub struct ModelRegistry {
    entries: Vec<ModelEntry>,
}

impl ModelRegistry {
    /// No models (a `lead_agent` run then fails with a clear error).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds clients for every entry. Duplicate names are an error.
    pub fn new(configs: Vec<ModelConfig>) -> Result<Self, ConfigError> {
        let mut reg = Self::empty();
        for c in configs {
            let client = crate::build_client(&c)?;
            reg.push(c, client)?;
        }
        Ok(reg)
    }

    /// Parses the `models:` list (null = none) and builds clients.
    pub fn from_value(v: &Value) -> Result<Self, ConfigError> {
        match v {
            Value::Null => Ok(Self::empty()),
            Value::Array(items) => {
                let mut configs = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    configs.push(
                        ModelConfig::from_value(item)
                            .map_err(|e| ConfigError(format!("models[{i}]: {}", e.0)))?,
                    );
                }
                Self::new(configs)
            }
            other => Err(ConfigError(format!(
                "`models:` must be a list, got {}",
                type_name(other)
            ))),
        }
    }

    /// Adds a model with a given client (custom providers, tests).
    pub fn push(
        &mut self,
        config: ModelConfig,
        client: Arc<dyn ChatModel>,
    ) -> Result<(), ConfigError> {
        if self.get(&config.name).is_some() {
            return Err(ConfigError(format!(
                "model '{}' is configured twice in `models:`",
                config.name
            )));
        }
        self.entries.push(ModelEntry { config, client });
        Ok(())
    }

    /// By name.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.entries.iter().find(|e| e.config.name == name)
    }

    /// Whether `name` is configured (the server answers 400 otherwise).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The first entry.
    pub fn default_model(&self) -> Option<&ModelEntry> {
        self.entries.first()
    }

    /// All entries, in order.
    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// Whether no model is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.entries
            .iter()
            .map(|e| e.config.name.as_str())
            .collect()
    }

    /// `GET /api/models`: `{"models": [...], "token_usage": {"enabled": ...}}`.
    pub fn api_json(&self, token_usage_enabled: bool) -> Value {
        json!({
            "models": self.entries.iter().map(|e| e.config.api_json()).collect::<Vec<_>>(),
            "token_usage": {"enabled": token_usage_enabled},
        })
    }

    /// Resolves the model of a run: `name` if given (must be configured), else the default.
    pub fn resolve(&self, name: Option<&str>) -> Result<&ModelEntry, ConfigError> {
        match name {
            Some(n) => self.get(n).ok_or_else(|| {
                ConfigError(format!(
                    "Model '{n}' is not in the configured model allowlist (configured: {})",
                    if self.is_empty() {
                        "none".to_string()
                    } else {
                        self.names().join(", ")
                    }
                ))
            }),
            None => self.default_model().ok_or_else(|| {
                ConfigError(
                    "no chat model is configured: add an entry to the `models:` list of the \
                     config file (name, use or provider, model, api_key, ...)"
                        .into(),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deerflow_entries() {
        let c = ModelConfig::from_value(&json!({
            "name": "gpt-4o", "display_name": "GPT-4o", "use": "langchain_openai:ChatOpenAI",
            "model": "gpt-4o", "api_key": "sk-x", "api_base": "https://example.test/v1",
            "max_tokens": 4096, "temperature": 0.7, "request_timeout": 30, "max_retries": 3,
            "supports_thinking": true, "supports_vision": true, "context_window": 128000,
            "when_thinking_enabled": {"extra_body": {"thinking": {"type": "enabled"}}},
            "when_thinking_disabled": {"reasoning_effort": "minimal"},
            "model_kwargs": {"top_p": 0.9}, "seed": 7, "pricing": {"currency": "USD"},
            "default_headers": {"X-Org": "o"},
        }))
        .unwrap();
        assert_eq!(c.provider, Provider::OpenAi);
        assert_eq!(c.base_url.as_deref(), Some("https://example.test/v1"));
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.max_retries, 3);
        assert_eq!(
            c.when_thinking_enabled,
            json!({"thinking": {"type": "enabled"}})
                .as_object()
                .unwrap()
                .clone()
        );
        assert_eq!(c.extra.get("top_p"), Some(&json!(0.9)));
        assert_eq!(c.extra.get("seed"), Some(&json!(7)));
        assert!(c.extra.get("pricing").is_none());
        assert_eq!(c.headers, vec![("X-Org".to_string(), "o".to_string())]);
        assert_eq!(
            c.thinking_fields(Some(false)).get("reasoning_effort"),
            Some(&json!("minimal"))
        );
        let a = ModelConfig::from_value(
            &json!({"name": "c", "use": "langchain_anthropic:ChatAnthropic", "model": "claude"}),
        )
        .unwrap();
        assert_eq!(a.provider, Provider::Anthropic);
        let d = ModelConfig::from_value(&json!({"name": "d", "use": "deerflow.models.patched_deepseek:PatchedChatDeepSeek", "model": "deepseek-chat"})).unwrap();
        assert_eq!(d.provider, Provider::OpenAi);
    }

    #[test]
    fn validation_errors_name_model_and_field() {
        let err = |v: Value| ModelConfig::from_value(&v).unwrap_err().0;
        assert!(err(json!({"use": "x:Y", "model": "m"})).contains("no `name`"));
        let e = err(
            json!({"name": "m1", "use": "langchain_google_genai:ChatGoogleGenerativeAI", "model": "g"}),
        );
        assert!(e.contains("model 'm1'") && e.contains("`use`"), "{e}");
        let e = err(json!({"name": "m2", "provider": "openai"}));
        assert!(e.contains("model 'm2'") && e.contains("`model`"), "{e}");
        let e =
            err(json!({"name": "m3", "provider": "openai", "model": "x", "temperature": "hot"}));
        assert!(e.contains("`temperature`"), "{e}");
        let e =
            err(json!({"name": "m4", "provider": "openai", "model": "x", "base_url": "ftp://x"}));
        assert!(e.contains("`base_url`"), "{e}");
        let e = err(json!({"name": "m5", "provider": "gemini", "model": "x"}));
        assert!(e.contains("`provider`"), "{e}");
        let e = err(json!({"name": "m6", "provider": "openai", "model": "x", "timeout": -1}));
        assert!(e.contains("`timeout`"), "{e}");
        let e = ModelRegistry::from_value(&json!([{"name": "a", "provider": "openai", "model": "x"}, {"name": "a", "provider": "openai", "model": "y"}])).unwrap_err().0;
        assert!(e.contains("twice"), "{e}");
        let e = ModelRegistry::from_value(&json!([{"name": "a", "provider": "openai"}]))
            .unwrap_err()
            .0;
        assert!(e.starts_with("models[0]: model 'a'"), "{e}");
    }

    #[test]
    fn the_first_alias_set_is_used_and_errors_name_the_key() {
        let c = ModelConfig::from_value(&json!({
            "name": "m", "provider": "openai", "model": "x", "model_name": [1],
            "base_url": "http://a", "api_base": 3, "timeout": 5, "request_timeout": [2],
        }))
        .unwrap();
        assert_eq!(
            (c.model.as_str(), c.base_url.as_deref(), c.timeout),
            ("x", Some("http://a"), Duration::from_secs(5))
        );
        let err = |v: Value| ModelConfig::from_value(&v).unwrap_err().0;
        for (entry, message) in [
            (
                json!({"name": "m", "provider": "openai", "model_name": 5}),
                "model 'm': field `model_name`: expected a string, got a number",
            ),
            (
                json!({"name": "m", "provider": "openai", "model": "x", "request_timeout": "soon"}),
                "model 'm': field `request_timeout`: expected a number, got 'soon'",
            ),
            (
                json!({"name": "m", "provider": "openai", "model": "x", "max_tokens": -5}),
                "model 'm': field `max_tokens`: expected a non-negative integer, got -5",
            ),
            (
                json!({"name": "m", "provider": "openai", "model": "x", "supports_vision": "yes"}),
                "model 'm': field `supports_vision`: expected true or false, got a string",
            ),
            (
                json!({"name": "m", "provider": "openai", "model": "x", "extra_body": [1]}),
                "model 'm': field `extra_body`: expected a mapping, got a list",
            ),
        ] {
            assert_eq!(err(entry), message);
        }
    }

    #[test]
    fn registry_default_lookup_and_api_json() {
        let reg = ModelRegistry::from_value(&json!([
            {"name": "a", "display_name": "A", "provider": "openai", "model": "x", "supports_thinking": true},
            {"name": "b", "provider": "anthropic", "model": "y"},
        ]))
        .unwrap();
        assert_eq!(reg.default_model().unwrap().config.name, "a");
        assert_eq!(reg.resolve(Some("b")).unwrap().config.model, "y");
        let e = reg.resolve(Some("zz")).unwrap_err().0;
        assert!(e.contains("'zz'") && e.contains("a, b"), "{e}");
        assert_eq!(
            reg.api_json(true),
            json!({"models": [
                {"name": "a", "model": "x", "display_name": "A", "description": null, "supports_thinking": true, "supports_reasoning_effort": false},
                {"name": "b", "model": "y", "display_name": null, "description": null, "supports_thinking": false, "supports_reasoning_effort": false},
            ], "token_usage": {"enabled": true}})
        );
        let e = ModelRegistry::empty().resolve(None).unwrap_err().0;
        assert!(e.contains("`models:`"), "{e}");
    }

    #[test]
    fn debug_form_hides_the_key_and_header_values() {
        let c = ModelConfig::from_value(&json!({
            "name": "a", "provider": "openai", "model": "x", "api_key": "sk-very-secret",
            "default_headers": {"Authorization": "Bearer hidden-token"},
        }))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(!shown.contains("hidden-token"), "{shown}");
        assert!(shown.contains("Authorization"), "{shown}");
    }
}
