//! What the networked backends (PostgreSQL, MySQL) share about opening a pool: its settings,
//! URLs without their passwords, and connection errors that name the server.

use std::time::Duration;

use antler_store::StoreError;

/// Pool settings of `open_postgres` / `open_mysql` and their `connect_pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most connections the pool opens (default 10).
    pub max_connections: u32,
    /// How long a caller waits for a free connection before a transient error (default 30 s).
    pub acquire_timeout: Duration,
    /// Server-side limit on one statement's run time (`statement_timeout` on PostgreSQL,
    /// `max_statement_time` on MariaDB, `max_execution_time` on MySQL, which applies to
    /// SELECTs only); `None` = the server's default.
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            statement_timeout: None,
        }
    }
}

/// The URL without its password, for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// A failed connection's error (already classified) with the server it was for.
pub(crate) fn connect_failed(backend: &str, url: &str, e: StoreError) -> StoreError {
    let at = |m: String| format!("cannot connect to {backend} at '{}': {m}", redact(url));
    match e {
        StoreError::Transient(m) => StoreError::Transient(at(m)),
        StoreError::Backend(m) => StoreError::Backend(at(m)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        let cases = [
            ("mysql://u:secret@h:1/db", "mysql://u:***@h:1/db"),
            ("mysql://u@h/db", "mysql://u@h/db"),
            ("postgres://u:secret@h:5/db", "postgres://u:***@h:5/db"),
            ("postgres://h/db", "postgres://h/db"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown);
        }
    }
}
