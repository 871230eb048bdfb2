//! The legacy HTTP+SSE MCP transport (protocol revision 2024-11-05), which rmcp no longer
//! ships: DeerFlow's `type: sse` servers. The client opens `GET <url>` as an event stream; the
//! server's first event, `endpoint`, names the URL to POST JSON-RPC messages to (usually with a
//! session id); every answer and server message then arrives on the stream as a `message`
//! event. Here that becomes rmcp's (sink, stream) transport: a writer task POSTs what the sink
//! receives, a reader task turns `message` events into the stream. The stream ends when the
//! event stream does (the session then fails its pending calls instead of hanging).

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};

use crate::sse::{SseEvent, SseParser};

/// What the transport hands to rmcp.
pub(crate) type SseTransport = (
    mpsc::Sender<TxJsonRpcMessage<RoleClient>>,
    mpsc::Receiver<RxJsonRpcMessage<RoleClient>>,
);

/// Opens the event stream at `url`, waits for the `endpoint` event and returns the transport.
/// The caller bounds the whole connect with its timeout.
pub(crate) async fn connect(
    url: &str,
    headers: reqwest::header::HeaderMap,
) -> Result<SseTransport, String> {
    let base = reqwest::Url::parse(url).map_err(|e| format!("url '{url}': {e}"))?;
    let http = reqwest::Client::new();
    let resp = http
        .get(base.clone())
        .headers(headers.clone())
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| format!("cannot open the event stream: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("the event stream answered {}", resp.status()));
    }
    let mut body = resp.bytes_stream();
    let mut parser = SseParser::new();
    let mut pending = Vec::new();
    // 1. the endpoint to POST to
    let endpoint = 'found: loop {
        let Some(chunk) = body.next().await else {
            return Err("the event stream ended before its `endpoint` event".into());
        };
        let chunk = chunk.map_err(|e| format!("event stream: {e}"))?;
        let mut events = Vec::new();
        parser.feed(&chunk, &mut events)?;
        let mut it = events.into_iter();
        for ev in it.by_ref() {
            if ev.event == "endpoint" {
                let target = base
                    .join(ev.data.trim())
                    .map_err(|e| format!("bad endpoint '{}': {e}", ev.data))?;
                pending.extend(it);
                break 'found target;
            }
        }
    };
    // 2. server -> client: `message` events
    let (mut in_tx, in_rx) = mpsc::channel::<RxJsonRpcMessage<RoleClient>>(64);
    tokio::spawn(async move {
        let deliver = |events: Vec<SseEvent>| {
            let mut out = Vec::new();
            for ev in events {
                if !(ev.event.is_empty() || ev.event == "message") {
                    continue;
                }
                match serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(&ev.data) {
                    Ok(m) => out.push(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "MCP (sse): ignoring an unreadable message")
                    }
                }
            }
            out
        };
        for m in deliver(std::mem::take(&mut pending)) {
            if in_tx.send(m).await.is_err() {
                return;
            }
        }
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                break;
            };
            let mut events = Vec::new();
            if let Err(e) = parser.feed(&chunk, &mut events) {
                tracing::warn!(error = %e, "MCP (sse): unreadable event stream");
                break;
            }
            for m in deliver(events) {
                if in_tx.send(m).await.is_err() {
                    return;
                }
            }
        }
        tracing::debug!("MCP (sse): the event stream ended");
    });
    // 3. client -> server: POST each message to the endpoint
    let (out_tx, mut out_rx) = mpsc::channel::<TxJsonRpcMessage<RoleClient>>(64);
    tokio::spawn(async move {
        while let Some(msg) = out_rx.next().await {
            let sent = http
                .post(endpoint.clone())
                .headers(headers.clone())
                .json(&msg)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "MCP (sse): the server refused a message")
                }
                Err(e) => tracing::warn!(error = %e, "MCP (sse): cannot post a message"),
            }
        }
    });
    Ok((out_tx, in_rx))
}
