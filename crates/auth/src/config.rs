//! Auth options (the `auth:` section of the server's config file). `Debug` redacts secrets,
//! because the binary prints the effective configuration.

use std::fmt;
use std::time::Duration;

/// How requests prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No credentials: every request is the user `default`.
    #[default]
    None,
    /// `x-api-key` header (what the official SDKs send).
    ApiKey,
    /// DeerFlow-compatible local accounts: cookie / bearer session tokens (API keys work too).
    Local,
    /// Identity from a reverse proxy's header, trusted only with the shared-secret header.
    TrustedHeader,
}

impl AuthMode {
    /// Parses `none | api_key | local | trusted_header`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" | "disabled" => Self::None,
            "api_key" | "apikey" => Self::ApiKey,
            "local" => Self::Local,
            "trusted_header" => Self::TrustedHeader,
            _ => return None,
        })
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ApiKey => "api_key",
            Self::Local => "local",
            Self::TrustedHeader => "trusted_header",
        }
    }
}

/// Every auth option, with DeerFlow's defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The mode.
    pub mode: AuthMode,
    /// HS256 secret for session tokens (`local` mode). When `None` the binary generates one
    /// and keeps it in `<data dir>/.jwt_secret`.
    pub jwt_secret: Option<String>,
    /// Whether `POST /api/v1/auth/register` is open.
    pub allow_registration: bool,
    /// Session token lifetime (DeerFlow: 7 days, 1..30).
    pub token_expiry: Duration,
    /// Failed logins per client before the lockout (5).
    pub lockout_threshold: u32,
    /// Lockout duration (300 s).
    pub lockout_duration: Duration,
    /// Clients tracked by the lockout at most (10 000); the oldest entry is evicted beyond.
    pub lockout_max_clients: usize,
    /// `trusted_header` mode: the header carrying the user id.
    pub trusted_header: String,
    /// `trusted_header` mode: the header carrying the shared secret.
    pub trusted_secret_header: String,
    /// `trusted_header` mode: the shared secret (required in that mode).
    pub trusted_secret: Option<String>,
    /// Peers whose `X-Real-IP` / `X-Forwarded-For` is believed for the lockout's client key.
    pub trusted_proxies: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            jwt_secret: None,
            allow_registration: true,
            token_expiry: Duration::from_secs(7 * 24 * 3600),
            lockout_threshold: 5,
            lockout_duration: Duration::from_secs(300),
            lockout_max_clients: 10_000,
            trusted_header: "x-forwarded-user".to_owned(),
            trusted_secret_header: "x-antler-proxy-secret".to_owned(),
            trusted_secret: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Checks the combination of options (a clear message for each problem).
    pub fn validate(&self) -> Result<(), String> {
        if self.mode == AuthMode::TrustedHeader {
            match &self.trusted_secret {
                Some(s) if s.len() >= 16 => {}
                _ => {
                    return Err("auth.mode trusted_header needs auth.trusted_secret (at least 16 characters)".to_owned());
                }
            }
            for h in [&self.trusted_header, &self.trusted_secret_header] {
                if http_header_name_ok(h).is_err() {
                    return Err(format!("auth: '{h}' is not a valid header name"));
                }
            }
        }
        if let Some(s) = &self.jwt_secret
            && s.len() < 16
        {
            return Err("auth.jwt_secret must be at least 16 characters".to_owned());
        }
        if self.lockout_threshold == 0 {
            return Err("auth.lockout_threshold must be at least 1".to_owned());
        }
        let days = self.token_expiry.as_secs() / 86_400;
        if !(1..=30).contains(&days) {
            return Err("auth.token_expiry_days must be 1..30".to_owned());
        }
        Ok(())
    }
}

fn http_header_name_ok(h: &str) -> Result<(), ()> {
    let ok = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(()) }
}

fn redacted(v: &Option<String>) -> &'static str {
    if v.is_some() { "<redacted>" } else { "<unset>" }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("allow_registration", &self.allow_registration)
            .field("token_expiry", &self.token_expiry)
            .field("lockout_threshold", &self.lockout_threshold)
            .field("lockout_duration", &self.lockout_duration)
            .field("lockout_max_clients", &self.lockout_max_clients)
            .field("trusted_header", &self.trusted_header)
            .field("trusted_secret_header", &self.trusted_secret_header)
            .field("trusted_secret", &redacted(&self.trusted_secret))
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let cfg = AuthConfig {
            jwt_secret: Some("super-secret-value-123".into()),
            trusted_secret: Some("hunter2-value-456789".into()),
            ..AuthConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("super-secret"));
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn trusted_header_mode_requires_a_secret() {
        let mut cfg = AuthConfig {
            mode: AuthMode::TrustedHeader,
            ..AuthConfig::default()
        };
        assert!(cfg.validate().is_err());
        cfg.trusted_secret = Some("0123456789abcdef".into());
        assert!(cfg.validate().is_ok());
        assert_eq!(AuthMode::parse("api_key"), Some(AuthMode::ApiKey));
        assert_eq!(AuthMode::parse("bogus"), None);
    }
}
