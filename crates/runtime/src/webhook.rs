//! Webhooks: when a run with `webhook` ends, its run row is POSTed to the URL, retried with
//! exponential backoff on connection errors and 5xx answers.

use std::time::Duration;

use crate::Runtime;

impl Runtime {
    pub(crate) async fn send_webhook(&self, url: String, owner: &str, run_id: &str) {
        let body = match self.get_run_any(owner, run_id).await {
            Ok(run) => serde_json::to_value(&run).unwrap_or_default(),
            _ => serde_json::json!({"run_id": run_id}),
        };
        let attempts = self.config.webhook_attempts.max(1);
        let mut delay = Duration::from_millis(200);
        let http = self.http.get_or_init(reqwest::Client::new);
        for attempt in 1..=attempts {
            let sent = http
                .post(&url)
                .timeout(Duration::from_secs(10))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => return,
                Ok(resp) if resp.status().is_client_error() => {
                    tracing::warn!(run_id, status = %resp.status(), "webhook rejected");
                    return;
                }
                Ok(resp) => {
                    tracing::warn!(run_id, attempt, status = %resp.status(), "webhook failed")
                }
                Err(e) => tracing::warn!(run_id, attempt, error = %e, "webhook failed"),
            }
            if attempt < attempts {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.shutdown.cancelled() => return,
                }
                delay *= 2;
            }
        }
    }
}
