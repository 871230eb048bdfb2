//! Login lockout: after `threshold` failed logins from one client (by IP), that client is
//! refused for `duration`, even with the right password. In-process (like DeerFlow's); the
//! table is bounded (`max_clients`, oldest entry evicted) so a spray of addresses cannot grow
//! it without limit. Uses tokio's clock so tests can pause time.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::error::{AuthError, AuthResult};

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

/// Counts failed logins per client. The lock is a short critical section, never held across
/// an await.
#[derive(Debug)]
pub struct LoginLimiter {
    threshold: u32,
    duration: Duration,
    max_clients: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl LoginLimiter {
    /// A limiter that locks a client out for `duration` after `threshold` failures.
    pub fn new(threshold: u32, duration: Duration, max_clients: usize) -> Self {
        Self {
            threshold: threshold.max(1),
            duration,
            max_clients: max_clients.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(LockedOut)` while `client` is locked out.
    pub fn check(&self, client: &str) -> AuthResult<()> {
        let now = Instant::now();
        let mut map = self.entries.lock();
        if let Some(e) = map.get(client).copied() {
            match e.locked_until {
                Some(until) if until > now => {
                    let left = until.saturating_duration_since(now);
                    let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    return Err(AuthError::LockedOut { retry_after });
                }
                Some(_) => {
                    map.remove(client);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Records a failed login; the `threshold`-th consecutive failure starts the lockout.
    pub fn record_failure(&self, client: &str) {
        let now = Instant::now();
        let mut map = self.entries.lock();
        if !map.contains_key(client) && map.len() >= self.max_clients {
            evict(&mut map, now, self.duration, self.max_clients);
        }
        let entry = map.entry(client.to_owned()).or_insert(Entry {
            failures: 0,
            locked_until: None,
            last_failure: now,
        });
        // Failures spread out over more than a lockout period start counting afresh.
        if now.saturating_duration_since(entry.last_failure) > self.duration {
            entry.failures = 0;
        }
        entry.failures += 1;
        entry.last_failure = now;
        if entry.failures >= self.threshold {
            entry.locked_until = Some(now + self.duration);
        }
    }

    /// Forgets a client's failures after a successful login.
    pub fn record_success(&self, client: &str) {
        self.entries.lock().remove(client);
    }

    /// Number of clients tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.lock().len()
    }
}

fn evict(map: &mut HashMap<String, Entry>, now: Instant, duration: Duration, max: usize) {
    map.retain(|_, e| {
        let locked = e.locked_until.is_some_and(|u| u > now);
        locked || now.saturating_duration_since(e.last_failure) <= duration
    });
    if map.len() < max {
        return;
    }
    if let Some(oldest) = map
        .iter()
        .min_by_key(|(_, e)| e.last_failure)
        .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn locks_after_threshold_and_expires() {
        let l = LoginLimiter::new(5, Duration::from_secs(300), 100);
        for _ in 0..4 {
            l.record_failure("1.2.3.4");
            assert!(l.check("1.2.3.4").is_ok());
        }
        l.record_failure("1.2.3.4");
        assert_eq!(
            l.check("1.2.3.4"),
            Err(AuthError::LockedOut { retry_after: 300 })
        );
        assert!(l.check("5.6.7.8").is_ok(), "other clients unaffected");
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(l.check("1.2.3.4").is_err());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(l.check("1.2.3.4").is_ok());
        l.record_failure("1.2.3.4");
        assert!(l.check("1.2.3.4").is_ok(), "count restarted");
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_and_table_is_bounded() {
        let l = LoginLimiter::new(2, Duration::from_secs(300), 3);
        l.record_failure("a");
        l.record_success("a");
        l.record_failure("a");
        assert!(l.check("a").is_ok());
        for c in ["b", "c", "d", "e"] {
            tokio::time::advance(Duration::from_secs(1)).await;
            l.record_failure(c);
        }
        assert!(l.tracked() <= 3);
    }
}
