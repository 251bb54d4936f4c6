//! Secrets: connection URLs, API keys, routing keys and auth headers that
//! the operator keeps out of the config file.
//!
//! A secret field in `stepgate.toml` is either inline text (fine for a
//! SQLite path or a public URL) or a reference: `{ env = "NAME" }` or
//! `{ file = "/run/secrets/name" }`. References are resolved in the host,
//! once, when the backends are built, so a missing secret stops the host at
//! start instead of in the middle of an incident.
//!
//! Every resolved secret is registered with the [`Redactor`], which every
//! backend error passes through before it reaches a playbook, the journal
//! or a log: a secret that a driver quotes in an error comes out as `***`.
//! This module never logs a value and its `Debug` never prints one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::Deserialize;

/// What replaces a secret in any text the host shows.
pub const MASK: &str = "***";

/// A secret value as the config gives it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Secret {
    /// Written into the config itself.
    Inline(String),
    /// Read from an environment variable of the host process.
    Env(EnvRef),
    /// Read from a file (first line ending trimmed), e.g. a mounted secret.
    File(FileRef),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvRef {
    pub env: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub file: PathBuf,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret::Inline(***)"),
            Secret::Env(r) => write!(f, "Secret::Env({})", r.env),
            Secret::File(r) => write!(f, "Secret::File({})", r.file.display()),
        }
    }
}

/// A secret that cannot be resolved. Names the config key and where the
/// value was looked for, never the value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error(
        "`{key}`: environment variable `{var}` is not set (or not UTF-8); export it before starting stepgate"
    )]
    MissingEnv { key: String, var: String },
    #[error("`{key}`: cannot read secret file {}: {message}", path.display())]
    File {
        key: String,
        path: PathBuf,
        message: String,
    },
    #[error("`{key}`: the secret from {source_name} is empty")]
    Empty { key: String, source_name: String },
}

impl Secret {
    /// Whether the value is written into the config file.
    pub fn is_inline(&self) -> bool {
        matches!(self, Secret::Inline(_))
    }

    /// The inline text, if the value is inline.
    pub fn inline(&self) -> Option<&str> {
        match self {
            Secret::Inline(text) => Some(text),
            _ => None,
        }
    }

    /// Reads the value. `key` names the config field for messages; relative
    /// files are resolved against `base_dir`. Env and file values are
    /// registered with `redactor`; inline values are the operator's choice
    /// to show, except for a URL's password, which is always masked.
    pub fn resolve(
        &self,
        key: &str,
        base_dir: &Path,
        redactor: &Redactor,
    ) -> Result<String, SecretError> {
        let value = match self {
            Secret::Inline(text) => text.clone(),
            Secret::Env(EnvRef { env }) => {
                let value = std::env::var(env).map_err(|_| SecretError::MissingEnv {
                    key: key.to_owned(),
                    var: env.clone(),
                })?;
                redactor.add(&value);
                value
            }
            Secret::File(FileRef { file }) => {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    base_dir.join(file)
                };
                let text = std::fs::read_to_string(&path).map_err(|e| SecretError::File {
                    key: key.to_owned(),
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                let value = text.trim_end_matches(['\n', '\r']).to_owned();
                redactor.add(&value);
                value
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty {
                key: key.to_owned(),
                source_name: self.source_name(),
            });
        }
        if let Some(password) = url_password(&value) {
            redactor.add(&password);
        }
        Ok(value)
    }

    fn source_name(&self) -> String {
        match self {
            Secret::Inline(_) => "the config".to_owned(),
            Secret::Env(r) => format!("environment variable `{}`", r.env),
            Secret::File(r) => format!("file {}", r.file.display()),
        }
    }
}

/// The password part of `scheme://user:password@host/...`, if any.
pub fn url_password(text: &str) -> Option<String> {
    let url = reqwest::Url::parse(text).ok()?;
    let password = url.password()?;
    let decoded = percent_decode(password);
    Some(decoded)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Masks every registered secret in text the host is about to show.
#[derive(Default)]
pub struct Redactor {
    secrets: RwLock<Vec<String>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor { .. }")
    }
}

impl Redactor {
    /// Registers a value to mask from now on.
    pub fn add(&self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        // A URL-encoded form may show up in a driver's message too.
        for form in [secret.to_owned(), percent_encode(secret)] {
            if !secrets.contains(&form) {
                secrets.push(form);
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every registered secret replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_owned();
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(secret: &Secret, redactor: &Redactor) -> Result<String, SecretError> {
        secret.resolve("db.ledger.url", Path::new("/nonexistent"), redactor)
    }

    #[test]
    fn env_and_file_secrets_resolve_and_are_masked() {
        let redactor = Redactor::default();
        // A variable every process has, read, never set: a test that sets
        // one races the other threads reading the environment.
        let path = std::env::var("PATH").expect("PATH is set");
        let value = resolve(&Secret::Env(EnvRef { env: "PATH".into() }), &redactor).unwrap();
        assert_eq!(value, path);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "routing-key-42\n").unwrap();
        let value = resolve(&Secret::File(FileRef { file }), &redactor).unwrap();
        assert_eq!(value, "routing-key-42");
        assert_eq!(
            redactor.redact(&format!("auth {path} failed for routing-key-42")),
            "auth *** failed for ***"
        );
    }

    #[test]
    fn missing_env_names_the_key_and_variable_not_a_value() {
        let err = resolve(
            &Secret::Env(EnvRef {
                env: "STEPGATE_TEST_NOT_SET_ANYWHERE".into(),
            }),
            &Redactor::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("db.ledger.url"), "{err}");
        assert!(err.contains("STEPGATE_TEST_NOT_SET_ANYWHERE"), "{err}");
    }

    #[test]
    fn url_passwords_are_masked_even_inline_and_encoded() {
        let redactor = Redactor::default();
        let url = Secret::Inline("postgres://app:p%40ss@db.internal:5432/ledger".into());
        resolve(&url, &redactor).unwrap();
        assert_eq!(
            redactor.redact("password authentication failed: p@ss / p%40ss"),
            "password authentication failed: *** / ***"
        );
        assert_eq!(format!("{url:?}"), "Secret::Inline(***)");
    }

    #[test]
    fn config_forms_deserialize() {
        #[derive(Deserialize)]
        struct T {
            a: Secret,
            b: Secret,
            c: Secret,
        }
        let t: T = toml::from_str(
            "a = \"sqlite::memory:\"\nb = { env = \"DB_URL\" }\nc = { file = \"/run/secrets/x\" }\n",
        )
        .unwrap();
        assert_eq!(t.a, Secret::Inline("sqlite::memory:".into()));
        assert_eq!(
            t.b,
            Secret::Env(EnvRef {
                env: "DB_URL".into()
            })
        );
        assert_eq!(
            t.c,
            Secret::File(FileRef {
                file: "/run/secrets/x".into()
            })
        );
        assert!(toml::from_str::<T>("a = { envv = \"X\" }\nb = \"\"\nc = \"\"\n").is_err());
    }
}
