//! The process-wide write lock of a database one process owns (SQLite), with two classes of
//! writers.
//!
//! SQLite admits one writer at a time; this process queues its writers here (async, FIFO
//! within a class) instead of in SQLite's busy handler, which sleeps and polls. Writes a client
//! is waiting on for an acknowledgement (a new run's row, a new thread) are [`Priority::Ack`]:
//! they go before queued [`Priority::Background`] writes (a running run's checkpoints, events
//! and status), so a create's latency does not grow with the number of runs in flight. At most
//! [`MAX_ACK_STREAK`] ack writers in a row are let ahead of a waiting background writer, so
//! background work is never starved.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Ack writers let ahead in a row while a background writer waits.
const MAX_ACK_STREAK: u32 = 8;

/// The class of a writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A client waits for this write to acknowledge its request.
    Ack,
    /// Everything else.
    Background,
}

#[derive(Debug, Default)]
struct State {
    locked: bool,
    ack: VecDeque<oneshot::Sender<WriteGuard>>,
    background: VecDeque<oneshot::Sender<WriteGuard>>,
    ack_streak: u32,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct WriteLock {
    state: Mutex<State>,
}

/// Holds the write lock; dropping it hands the lock to the next writer.
#[derive(Debug)]
pub struct WriteGuard {
    lock: Option<Arc<WriteLock>>,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            lock.release();
        }
    }
}

impl WriteLock {
    /// Waits for the lock. Cancel-safe: a waiter dropped before or after being handed the
    /// lock passes it on.
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> WriteGuard {
        loop {
            let rx = {
                let mut s = self.state.lock();
                if !s.locked {
                    s.locked = true;
                    return WriteGuard {
                        lock: Some(self.clone()),
                    };
                }
                let (tx, rx) = oneshot::channel();
                match priority {
                    Priority::Ack => s.ack.push_back(tx),
                    Priority::Background => s.background.push_back(tx),
                }
                rx
            };
            // A sender is only ever consumed by `send`, so an error cannot happen while the
            // lock exists; queue again rather than assume.
            if let Ok(guard) = rx.await {
                return guard;
            }
        }
    }

    /// Hands the lock to the next waiter (ack first, within the streak bound), or frees it.
    fn release(self: &Arc<Self>) {
        loop {
            let next = {
                let mut s = self.state.lock();
                let take_ack =
                    !s.ack.is_empty() && (s.background.is_empty() || s.ack_streak < MAX_ACK_STREAK);
                if take_ack {
                    s.ack_streak += 1;
                    s.ack.pop_front()
                } else if let Some(tx) = s.background.pop_front() {
                    s.ack_streak = 0;
                    Some(tx)
                } else {
                    s.locked = false;
                    None
                }
            };
            let Some(tx) = next else {
                return;
            };
            let guard = WriteGuard {
                lock: Some(self.clone()),
            };
            match tx.send(guard) {
                Ok(()) => return,
                // that waiter is gone: disarm the returned guard (we still hold the lock)
                // and try the next one
                Err(mut guard) => {
                    guard.lock = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn ack_writers_go_first_but_background_is_not_starved() {
        let lock = Arc::new(WriteLock::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = lock.acquire(Priority::Background).await;
        let mut tasks = Vec::new();
        // queued while the lock is held: 2 background, then 10 ack writers
        for (i, p) in [Priority::Background, Priority::Background]
            .into_iter()
            .chain(std::iter::repeat_n(Priority::Ack, 10))
            .enumerate()
        {
            let (lock, order) = (lock.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _g = lock.acquire(p).await;
                order.lock().push((i, p));
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().clone();
        let classes: Vec<Priority> = order.iter().map(|(_, p)| *p).collect();
        let mut want = vec![Priority::Ack; MAX_ACK_STREAK as usize];
        want.push(Priority::Background);
        want.extend([Priority::Ack, Priority::Ack, Priority::Background]);
        assert_eq!(classes, want, "{order:?}");
        // FIFO within a class
        let acks: Vec<usize> = order
            .iter()
            .filter(|(_, p)| *p == Priority::Ack)
            .map(|(i, _)| *i)
            .collect();
        assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
    }

    #[tokio::test]
    async fn a_cancelled_waiter_passes_the_lock_on() {
        let lock = Arc::new(WriteLock::default());
        let held = lock.acquire(Priority::Background).await;
        let waiter = {
            let lock = lock.clone();
            tokio::spawn(async move {
                let _g = lock.acquire(Priority::Ack).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        // the lock is free again
        let got =
            tokio::time::timeout(Duration::from_secs(2), lock.acquire(Priority::Background)).await;
        assert!(got.is_ok(), "the lock was lost with the cancelled waiter");
    }
}
