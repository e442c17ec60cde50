//! [`Token`]: a shared secret that a client presents and a server checks.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::SecurityError;

/// A shared secret. Comparison is constant-time in the secret's contents; only its length can
/// leak. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// A token with this secret; an empty one is refused.
    pub fn new(secret: &str) -> Result<Token, SecurityError> {
        if secret.is_empty() {
            return Err(SecurityError::EmptyToken);
        }
        Ok(Token(Arc::from(secret)))
    }

    /// The token in the environment variable `name`.
    pub fn from_env(name: &str) -> Result<Token, SecurityError> {
        let secret = std::env::var(name).map_err(|_| SecurityError::TokenEnv {
            name: name.to_string(),
        })?;
        Token::new(&secret)
    }

    /// The token that the settings `token` (the secret itself) and `token-env` (the name of an
    /// environment variable holding it) describe: `None` when neither is set, an error when both
    /// are.
    pub fn from_settings(
        token: Option<&str>,
        token_env: Option<&str>,
    ) -> Result<Option<Token>, SecurityError> {
        match (token, token_env) {
            (None, None) => Ok(None),
            (Some(secret), None) => Token::new(secret).map(Some),
            (None, Some(name)) => Token::from_env(name).map(Some),
            (Some(_), Some(_)) => Err(SecurityError::TokenConflict),
        }
    }

    /// The secret's bytes, to send to a server.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// True when `presented` is this secret, compared in constant time.
    pub fn verify(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_and_hide_themselves() {
        let token = Token::new("s3cret").unwrap();
        assert!(token.verify(b"s3cret"));
        assert!(!token.verify(b"s3creT"));
        assert!(!token.verify(b"s3cre"));
        assert!(!token.verify(b""));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert!(matches!(Token::new(""), Err(SecurityError::EmptyToken)));
    }

    #[test]
    fn settings_pick_one_source() {
        assert_eq!(Token::from_settings(None, None).unwrap(), None);
        assert!(Token::from_settings(Some("a"), None)
            .unwrap()
            .unwrap()
            .verify(b"a"));
        assert!(matches!(
            Token::from_settings(Some("a"), Some("PATH")),
            Err(SecurityError::TokenConflict)
        ));
        let missing = "LTXD_TRANSPORT_SECURITY_TEST_UNSET_VARIABLE";
        let err = Token::from_settings(None, Some(missing)).unwrap_err();
        assert!(err.to_string().contains(missing), "{err}");
        // PATH is set in every test environment; read it back through the setting.
        let path = std::env::var("PATH").unwrap();
        assert!(Token::from_settings(None, Some("PATH"))
            .unwrap()
            .unwrap()
            .verify(path.as_bytes()));
    }
}
