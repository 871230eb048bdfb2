//! `antler-llm`: chat-model clients, fake provider servers, tools and the `lead_agent` graph.
//!
//! - [`config`]: DeerFlow-compatible `models:` entries ([`ModelConfig`]) and the
//!   [`ModelRegistry`] (first entry = default, `GET /api/models` JSON).
//! - [`chat`]: the provider-neutral [`ChatModel`] trait (a stream of [`ChatEvent`]s) and
//!   [`MessageAssembler`], which turns events into LangChain `AIMessageChunk` / `AIMessage` JSON.
//! - [`openai`] / [`anthropic`]: HTTP clients (SSE streaming, tool calls, usage, reasoning,
//!   retries with backoff before the first chunk, timeouts).
//! - `fake` (feature `testing`): scripted fake provider servers for tests (real HTTP on
//!   loopback); test crates enable it through their `[dev-dependencies]`.
//! - [`tools`]: the [`Tool`] trait and per-thread workspace tools.
//! - [`mcp`]: MCP servers' tools (stdio / streamable HTTP through `rmcp`) as [`Tool`]s.
//! - [`agent`]: the `lead_agent` ReAct graph (model ⇄ tools, title middleware, subagents).

pub mod agent;
pub mod anthropic;
pub mod chat;
pub mod config;
pub mod error;
#[cfg(feature = "testing")]
pub mod fake;
pub mod mcp;
mod mcp_sse;
pub mod openai;
pub mod sse;
pub mod tools;
mod transport;

use std::sync::Arc;

pub use agent::{LeadAgentOptions, SubagentSpec, TitleOptions, lead_agent};
pub use anthropic::AnthropicClient;
pub use chat::{
    ChatEvent, ChatModel, ChatRequest, ChatStream, MessageAssembler, ToolSpec, Usage, generate,
};
pub use config::{ModelConfig, ModelEntry, ModelRegistry, Provider};
pub use error::{ConfigError, LlmError};
pub use mcp::{McpFailure, McpHub, McpServerConfig, McpTool, McpTransport};
pub use openai::OpenAiClient;
pub use tools::{Tool, ToolContext, ToolError, Workspace, WorkspaceOptions};
pub use transport::RetryPolicy;

/// Builds the client for a config entry (default retry policy).
pub fn build_client(cfg: &ModelConfig) -> Result<Arc<dyn ChatModel>, ConfigError> {
    build_client_with(cfg, RetryPolicy::default())
}

/// Builds the client for a config entry with a given retry backoff.
pub fn build_client_with(
    cfg: &ModelConfig,
    retry: RetryPolicy,
) -> Result<Arc<dyn ChatModel>, ConfigError> {
    Ok(match cfg.provider {
        Provider::OpenAi => Arc::new(OpenAiClient::new(cfg.clone())?.with_retry_policy(retry)),
        Provider::Anthropic => {
            Arc::new(AnthropicClient::new(cfg.clone())?.with_retry_policy(retry))
        }
    })
}
