//! Boots the real router on 127.0.0.1:0 with in-memory stores and the example graphs.

#![allow(dead_code)]

use antler_gateway::{AppState, Graphs, router};

/// A running server and a client for it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
}

impl TestApp {
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with(|state| state).await
    }

    /// A server whose state `configure` adjusts first (limits, intervals ...).
    pub async fn spawn_with(configure: impl FnOnce(AppState) -> AppState) -> anyhow::Result<Self> {
        let graphs = Graphs::new(antler_graph::examples::all());
        let state = configure(AppState::in_memory(graphs)?);
        state.runtime.register_system_assistants().await?;
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base: format!("http://{addr}"),
            // A bound on every request, so a route that never answers fails the test instead
            // of hanging it.
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
            state,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self.client.get(self.url(path)).send().await?)
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self.client.post(self.url(path)).json(&body).send().await?)
    }

    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &'static [u8],
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?)
    }
}

/// Status and parsed JSON body.
pub async fn json_of(resp: reqwest::Response) -> anyhow::Result<(u16, serde_json::Value)> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    let value = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)?
    };
    Ok((status, value))
}
