//! Bearer tokens: the secret a hub exposed beyond loopback requires, and that a [`crate::Client`]
//! (HTTP requests and the WebSocket upgrade alike) sends as `Authorization: Bearer <token>`.
//!
//! The `ats` CLI sends no credentials at all; a hosted ATS with API keys takes them the usual
//! way, in the `Authorization` header with the `Bearer` scheme (RFC 6750), which is what this
//! module produces and, in the hub, checks.

use std::fmt;
use std::str::FromStr;

use reqwest::header::HeaderValue;

/// Longest token accepted (a header value, not a document).
pub const MAX_TOKEN_LEN: usize = 4096;

/// The authentication scheme of the `Authorization` header.
const SCHEME: &str = "Bearer";

/// Why a string cannot be a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is empty (or only white space).
    #[error("the access token is empty")]
    Empty,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("the access token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// The token holds a character that cannot be sent in a header (only visible ASCII can).
    #[error("the access token may hold only visible ASCII characters (no spaces)")]
    InvalidCharacter,
}

/// A bearer token. Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// Checks and wraps a token: 1 to [`MAX_TOKEN_LEN`] visible ASCII characters; white space
    /// around it (a trailing newline from a file or an env var) is dropped.
    pub fn new(token: impl Into<String>) -> Result<Self, TokenError> {
        let token: String = token.into();
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::InvalidCharacter);
        }
        Ok(Self(token.to_owned()))
    }

    /// The secret itself.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The number of bytes of the secret.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a token is never empty (kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Bearer <token>`, marked sensitive so that HTTP debug output hides it.
    pub(crate) fn authorization_value(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("{SCHEME} {}", self.0))
            // Visible ASCII only (checked in `new`): always a valid header value.
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        v.set_sensitive(true);
        v
    }

    /// Whether an `Authorization` header value carries this token with the `Bearer` scheme
    /// (scheme case-insensitive). The comparison takes the same time wherever the first
    /// difference is, so the secret cannot be guessed byte by byte from answer times.
    #[cfg(feature = "hub")]
    pub(crate) fn admits(&self, authorization: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        let Some(split) = authorization.iter().position(|&b| b == b' ') else {
            return false;
        };
        let (scheme, rest) = authorization.split_at(split);
        if !scheme.eq_ignore_ascii_case(SCHEME.as_bytes()) {
            return false;
        }
        let given = rest.trim_ascii();
        bool::from(given.ct_eq(self.0.as_bytes()))
    }
}

impl FromStr for AccessToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_trimmed() {
        assert_eq!(AccessToken::new("  abc-123\n").unwrap().secret(), "abc-123");
        assert_eq!(AccessToken::new(" \n"), Err(TokenError::Empty));
        assert_eq!(AccessToken::new("a b"), Err(TokenError::InvalidCharacter));
        assert_eq!(AccessToken::new("é"), Err(TokenError::InvalidCharacter));
        assert_eq!(
            AccessToken::new("x".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = AccessToken::new("s3cret-value").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(!format!("{:?}", t.authorization_value()).contains("s3cret"));
    }

    #[cfg(feature = "hub")]
    #[test]
    fn admits_only_the_bearer_token() {
        let t = AccessToken::new("s3cret").unwrap();
        assert!(t.admits(b"Bearer s3cret"));
        assert!(t.admits(b"bearer  s3cret "));
        assert!(!t.admits(b"Bearer s3cre"));
        assert!(!t.admits(b"Bearer s3cretX"));
        assert!(!t.admits(b"Basic s3cret"));
        assert!(!t.admits(b"s3cret"));
        assert!(!t.admits(b""));
    }
}
