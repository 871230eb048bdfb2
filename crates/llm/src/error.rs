//! The crate's error types: [`LlmError`] for model calls, [`ConfigError`] for `models:`
//! configuration. Messages never contain API keys: provider bodies are quoted (truncated) and
//! URLs carry no credentials (keys travel in headers).

use std::time::Duration;

/// Error of a chat-model call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The model is misconfigured (missing key, bad URL, ...).
    #[error("model '{model}' is misconfigured: {message}")]
    Config {
        /// Model name (config `name`).
        model: String,
        /// What is wrong.
        message: String,
    },
    /// The provider answered with a non-success HTTP status.
    #[error(
        "{provider} model '{model}' returned HTTP {status}{}: {message}",
        attempts_suffix(*attempts)
    )]
    Status {
        /// `openai` / `anthropic`.
        provider: &'static str,
        /// Model name.
        model: String,
        /// HTTP status code.
        status: u16,
        /// The provider's error message (or the start of the body).
        message: String,
        /// How many requests were made.
        attempts: u32,
    },
    /// The provider could not be reached.
    #[error("could not reach {provider} model '{model}'{}: {message}", attempts_suffix(*attempts))]
    Connect {
        /// `openai` / `anthropic`.
        provider: &'static str,
        /// Model name.
        model: String,
        /// Transport error text.
        message: String,
        /// How many requests were made.
        attempts: u32,
    },
    /// No data arrived within the configured timeout.
    #[error("{provider} model '{model}' timed out after {}s without data{}", timeout.as_secs_f64(), attempts_suffix(*attempts))]
    Timeout {
        /// `openai` / `anthropic`.
        provider: &'static str,
        /// Model name.
        model: String,
        /// The configured timeout.
        timeout: Duration,
        /// How many requests were made.
        attempts: u32,
    },
    /// The provider sent something that is not a valid stream chunk.
    #[error("{provider} model '{model}' sent a malformed stream chunk: {message}")]
    Malformed {
        /// `openai` / `anthropic`.
        provider: &'static str,
        /// Model name.
        model: String,
        /// What was wrong (and the start of the offending data).
        message: String,
    },
    /// The provider reported an error inside the stream.
    #[error("{provider} model '{model}' reported an error: {message}")]
    Provider {
        /// `openai` / `anthropic`.
        provider: &'static str,
        /// Model name.
        model: String,
        /// The provider's error text.
        message: String,
    },
    /// The call was cancelled.
    #[error("model call cancelled")]
    Cancelled,
}

fn attempts_suffix(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    }
}

impl LlmError {
    /// A Python-style error class name, used as the run error kind (LangChain / OpenAI SDK
    /// names where one exists).
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Config { .. } => "ValueError",
            LlmError::Status { status: 429, .. } => "RateLimitError",
            LlmError::Status { status: 401, .. } => "AuthenticationError",
            LlmError::Status { status: 400, .. } => "BadRequestError",
            LlmError::Status { status: 404, .. } => "NotFoundError",
            LlmError::Status { status, .. } if *status >= 500 => "InternalServerError",
            LlmError::Status { .. } => "APIStatusError",
            LlmError::Connect { .. } => "APIConnectionError",
            LlmError::Timeout { .. } => "APITimeoutError",
            LlmError::Malformed { .. } => "APIResponseValidationError",
            LlmError::Provider { .. } => "APIError",
            LlmError::Cancelled => "CancelledError",
        }
    }
}

/// Error in a `models:` entry (or in agent options).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// `models[<index>] '<name>': field `<field>`: <message>`.
    pub(crate) fn field(model: &str, field: &str, message: impl std::fmt::Display) -> Self {
        ConfigError(format!("model '{model}': field `{field}`: {message}"))
    }
}

/// Cuts `s` to at most `max` chars (adding `…`), for quoting provider data in errors.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}
