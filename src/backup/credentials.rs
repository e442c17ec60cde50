//! Static keys from the AWS shared credentials file, for when the environment holds none.
//!
//! The file is `AWS_SHARED_CREDENTIALS_FILE`, or `~/.aws/credentials`; the profile is
//! `AWS_PROFILE`, or `default`. Only static keys are read (`aws_access_key_id`,
//! `aws_secret_access_key`, `aws_session_token`); `object_store` itself covers the environment
//! variables, web identity and the instance metadata service.

use std::path::PathBuf;

/// Keys read from a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCredentials {
    /// `aws_access_key_id`.
    pub access_key_id: String,
    /// `aws_secret_access_key`.
    pub secret_access_key: String,
    /// `aws_session_token`, if any.
    pub session_token: Option<String>,
}

/// The keys of the configured profile in the shared credentials file, if it has them.
pub fn from_shared_file() -> Option<SharedCredentials> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    parse(&text, &profile)
}

/// The keys of `profile` in the INI text of a credentials file.
pub fn parse(text: &str, profile: &str) -> Option<SharedCredentials> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = Some(value.trim().to_string());
            match key.trim() {
                "aws_access_key_id" => id = value,
                "aws_secret_access_key" => secret = value,
                "aws_session_token" => token = value,
                _ => {}
            }
        }
    }
    Some(SharedCredentials {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_profile_is_read_from_its_section() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[other]\n\
                    # comment\naws_access_key_id = C\naws_secret_access_key = D\naws_session_token = T\n";
        let c = super::parse(text, "other").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("C", "D")
        );
        assert_eq!(c.session_token.as_deref(), Some("T"));
        assert_eq!(super::parse(text, "default").unwrap().session_token, None);
        assert_eq!(super::parse(text, "missing"), None);
    }
}
