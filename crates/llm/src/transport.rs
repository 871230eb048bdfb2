//! The HTTP side shared by the providers: building a client (timeouts, TLS), sending a request
//! with retries (exponential backoff with jitter, `Retry-After`), and turning the SSE body into
//! [`ChatEvent`]s through a provider [`Decoder`]. Retries happen only while no event has been
//! delivered to the caller; after that any error ends the stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::{HeaderMap, HeaderName, HeaderValue};
use ::http::{Request, Uri};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use serde_json::Value;

use crate::chat::{ChatEvent, ChatStream};
use crate::config::ModelConfig;
use crate::error::{ConfigError, LlmError, excerpt};
use crate::sse::{SseEvent, SseParser};

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// The HTTP client of one model (connection pool inside; cheap to clone).
pub(crate) type HttpClient = Client<Connector, Full<Bytes>>;

/// Backoff between retries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry (doubled each time, jittered down to half).
    pub initial_backoff: Duration,
    /// Upper bound of the computed delay.
    pub max_backoff: Duration,
    /// Upper bound of a provider's `Retry-After`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based).
    fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_retry_after);
        }
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        // "equal jitter": between half and all of the exponential delay
        let factor = rand::rng().random_range(0.5..=1.0);
        exp.mul_f64(factor)
    }
}

/// Builds the HTTP client of one model: connect timeout, HTTP/1.1, and HTTPS through rustls
/// with the ring provider and the platform's trust store when the `tls` feature is on.
pub(crate) fn http_client(cfg: &ModelConfig) -> Result<HttpClient, ConfigError> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(cfg.timeout.min(Duration::from_secs(30))));
    http.set_nodelay(true);
    http.enforce_http(false);
    #[cfg(feature = "tls")]
    let connector = {
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_platform_verifier())
            .map_err(|e| ConfigError(format!("model '{}': TLS setup failed: {e}", cfg.name)))?
            .with_no_client_auth();
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http)
    };
    #[cfg(not(feature = "tls"))]
    let connector = {
        if cfg
            .base_url
            .as_deref()
            .is_none_or(|u| u.to_ascii_lowercase().starts_with("https://"))
        {
            return Err(ConfigError::field(
                &cfg.name,
                "base_url",
                "https:// needs antler-llm built with the `tls` feature",
            ));
        }
        http
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Resolves the API key: a leftover `$NAME` / `${NAME}` is read from the environment; absent
/// keys fall back to the provider's usual variable.
pub(crate) fn api_key(
    cfg: &ModelConfig,
    env_fallback: &[&str],
) -> Result<Option<String>, LlmError> {
    match cfg.api_key.as_deref() {
        Some(k) if k.starts_with('$') => {
            let var = k
                .trim_start_matches('$')
                .trim_start_matches('{')
                .trim_end_matches('}');
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(LlmError::Config {
                    model: cfg.name.clone(),
                    message: format!(
                        "api_key refers to environment variable {var}, which is not set"
                    ),
                }),
            }
        }
        Some(k) => Ok(Some(k.to_string())),
        None => Ok(env_fallback
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))),
    }
}

/// Adds the config's `default_headers`.
pub(crate) fn extra_headers(cfg: &ModelConfig, headers: &mut HeaderMap) -> Result<(), LlmError> {
    for (k, v) in &cfg.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| LlmError::Config {
            model: cfg.name.clone(),
            message: format!("default_headers: '{k}' is not a valid header name"),
        })?;
        let value = HeaderValue::from_str(v).map_err(|_| LlmError::Config {
            model: cfg.name.clone(),
            message: format!("default_headers: the value of '{k}' is not a valid header value"),
        })?;
        headers.insert(name, value);
    }
    Ok(())
}

/// Joins a base URL and a path (`https://x/v1` + `/chat/completions`).
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// What a decoder says after an SSE event.
pub(crate) enum Flow {
    Continue,
    Done,
}

/// Decoder failure: malformed data or an error reported by the provider.
pub(crate) enum DecodeError {
    Malformed(String),
    Provider(String),
}

/// Provider-specific SSE decoding.
pub(crate) trait Decoder: Default + Send + 'static {
    /// One SSE event; decoded chat events go to `out`.
    fn event(&mut self, ev: &SseEvent, out: &mut VecDeque<ChatEvent>) -> Result<Flow, DecodeError>;
    /// The body ended before the decoder said `Done`.
    fn eof(&mut self) -> Result<(), DecodeError>;
}

/// One prepared request to a provider.
pub(crate) struct Endpoint {
    pub client: HttpClient,
    pub provider: &'static str,
    pub model: String,
    pub url: Uri,
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub max_retries: u32,
    pub retry: RetryPolicy,
}

/// Parses the request URL of a model.
pub(crate) fn parse_url(model: &str, url: &str) -> Result<Uri, LlmError> {
    url.parse::<Uri>().map_err(|e| LlmError::Config {
        model: model.to_string(),
        message: format!("base_url gives the invalid URL '{url}': {e}"),
    })
}

struct Drive<D> {
    ep: Arc<Endpoint>,
    body: Bytes,
    attempts: u32,
    response: Option<Incoming>,
    parser: SseParser,
    decoder: D,
    queue: VecDeque<ChatEvent>,
    delivered: bool,
    done: bool,
    /// An error to report once the events decoded before it are delivered.
    pending_error: Option<LlmError>,
}

/// A transport failure (no secrets: URLs carry none, keys travel in headers).
enum Transport {
    Timeout,
    Failed(String),
}

/// `e` and its sources, deduplicated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

/// The provider's error message out of an error body (`{"error": {"message"}}`,
/// `{"error": "..."}`, `{"message"}`), else the start of the body.
fn provider_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let msg = v
            .pointer("/error/message")
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(Value::as_str);
        if let Some(m) = msg {
            return excerpt(m, 1000);
        }
    }
    let trimmed = body.trim();
    if trimmed.is_empty() {
        "(empty body)".into()
    } else {
        excerpt(trimmed, 1000)
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
    }
    headers
        .get(::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// Reads at most `cap` bytes of an (error) body, each read bounded by `timeout`.
async fn read_capped(mut body: Incoming, cap: usize, timeout: Duration) -> String {
    let mut out = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(timeout, body.frame()).await {
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() >= cap {
                out.truncate(cap);
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<D: Decoder> Drive<D> {
    fn transport_error(&self, t: Transport) -> LlmError {
        match t {
            Transport::Timeout => LlmError::Timeout {
                provider: self.ep.provider,
                model: self.ep.model.clone(),
                timeout: self.ep.timeout,
                attempts: self.attempts,
            },
            Transport::Failed(message) => LlmError::Connect {
                provider: self.ep.provider,
                model: self.ep.model.clone(),
                message,
                attempts: self.attempts,
            },
        }
    }

    fn can_retry(&self) -> bool {
        !self.delivered && self.attempts <= self.ep.max_retries
    }

    fn delay(&self, retry_after: Option<Duration>) -> Duration {
        let d = self.ep.retry.backoff(self.attempts, retry_after);
        tracing::debug!(
            provider = self.ep.provider,
            model = %self.ep.model,
            attempt = self.attempts,
            delay_ms = d.as_millis() as u64,
            "retrying model request"
        );
        d
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, LlmError> {
        let mut req = Request::post(self.ep.url.clone())
            .body(Full::new(self.body.clone()))
            .map_err(|e| LlmError::Config {
                model: self.ep.model.clone(),
                message: format!("cannot build the request: {e}"),
            })?;
        *req.headers_mut() = self.ep.headers.clone();
        Ok(req)
    }

    /// Sends the request until it succeeds or retries are exhausted.
    async fn send(&mut self) -> Result<Incoming, LlmError> {
        loop {
            self.attempts += 1;
            let req = self.request()?;
            let sent = tokio::time::timeout(self.ep.timeout, self.ep.client.request(req)).await;
            let failure = match sent {
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp.into_body()),
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    let after = retry_after(resp.headers());
                    let body = read_capped(resp.into_body(), 64 * 1024, self.ep.timeout).await;
                    if retryable_status(status) && self.can_retry() {
                        tokio::time::sleep(self.delay(after)).await;
                        continue;
                    }
                    return Err(LlmError::Status {
                        provider: self.ep.provider,
                        model: self.ep.model.clone(),
                        status,
                        message: provider_message(&body),
                        attempts: self.attempts,
                    });
                }
                Ok(Err(e)) => Transport::Failed(error_chain(&e)),
                Err(_) => Transport::Timeout,
            };
            if self.can_retry() {
                tokio::time::sleep(self.delay(None)).await;
                continue;
            }
            return Err(self.transport_error(failure));
        }
    }

    fn decode_error(&self, e: DecodeError) -> LlmError {
        match e {
            DecodeError::Malformed(message) => LlmError::Malformed {
                provider: self.ep.provider,
                model: self.ep.model.clone(),
                message,
            },
            DecodeError::Provider(message) => LlmError::Provider {
                provider: self.ep.provider,
                model: self.ep.model.clone(),
                message,
            },
        }
    }

    fn feed(&mut self, events: Vec<SseEvent>) -> Result<(), LlmError> {
        for ev in events {
            if self.done {
                break;
            }
            match self.decoder.event(&ev, &mut self.queue) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done) => self.done = true,
                Err(e) => return Err(self.decode_error(e)),
            }
        }
        Ok(())
    }

    fn end_of_body(&mut self) -> Result<(), LlmError> {
        let mut events = Vec::new();
        let parsed = self.parser.finish(&mut events);
        let fed = parsed
            .map_err(|m| self.decode_error(DecodeError::Malformed(m)))
            .and_then(|()| self.feed(events));
        let ended = if self.done {
            Ok(())
        } else {
            self.decoder.eof().map_err(|e| self.decode_error(e))
        };
        self.done = true;
        fed.and(ended)
    }

    /// The next event (or error), or None at the end. Events decoded before an error are
    /// delivered before it.
    async fn next(&mut self) -> Option<Result<ChatEvent, LlmError>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                self.delivered = true;
                return Some(Ok(ev));
            }
            if let Some(e) = self.pending_error.take() {
                self.done = true;
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            let body = match self.response.as_mut() {
                Some(b) => b,
                None => match self.send().await {
                    Ok(b) => self.response.insert(b),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            };
            let frame = match tokio::time::timeout(self.ep.timeout, body.frame()).await {
                Err(_) => Err(Transport::Timeout),
                Ok(Some(Err(e))) => Err(Transport::Failed(error_chain(&e))),
                Ok(Some(Ok(frame))) => Ok(frame.into_data().ok()),
                Ok(None) => {
                    if let Err(e) = self.end_of_body() {
                        self.pending_error = Some(e);
                    }
                    continue;
                }
            };
            match frame {
                Ok(None) => {}
                Ok(Some(bytes)) => {
                    let mut events = Vec::new();
                    let parsed = self.parser.feed(&bytes, &mut events);
                    let fed = self.feed(events);
                    if let Err(e) = fed {
                        self.done = true;
                        self.pending_error = Some(e);
                    } else if let Err(msg) = parsed {
                        self.done = true;
                        self.pending_error = Some(self.decode_error(DecodeError::Malformed(msg)));
                    }
                }
                Err(t) => {
                    if self.can_retry() && self.queue.is_empty() {
                        // nothing was delivered yet: start over
                        self.response = None;
                        self.parser = SseParser::new();
                        self.decoder = D::default();
                        tokio::time::sleep(self.delay(None)).await;
                        continue;
                    }
                    self.done = true;
                    self.pending_error = Some(self.transport_error(t));
                }
            }
        }
    }
}

/// Streams `body` to the endpoint and decodes the answer with `D`.
pub(crate) fn drive<D: Decoder>(ep: Arc<Endpoint>, body: Bytes) -> ChatStream {
    let state = Drive {
        ep,
        body,
        attempts: 0,
        response: None,
        parser: SseParser::new(),
        decoder: D::default(),
        queue: VecDeque::new(),
        delivered: false,
        done: false,
        pending_error: None,
    };
    futures::stream::unfold(state, |mut st| async move {
        let item = st.next().await?;
        Some((item, st))
    })
    .boxed()
}

/// A stream that yields one error.
pub(crate) fn failed(e: LlmError) -> ChatStream {
    futures::stream::once(async move { Err(e) }).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_honours_retry_after() {
        let p = RetryPolicy::default();
        for retry in 1..6 {
            let d = p.backoff(retry, None);
            let full = Duration::from_millis(500) * (1 << (retry - 1));
            assert!(
                d <= full.min(p.max_backoff) && d >= full.min(p.max_backoff) / 2,
                "{d:?}"
            );
        }
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(999))),
            p.max_retry_after
        );
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
    }

    #[test]
    fn provider_messages_are_extracted() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"Rate limit"}}"#),
            "Rate limit"
        );
        assert_eq!(
            provider_message(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(provider_message("  "), "(empty body)");
        assert_eq!(
            provider_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }
}
