//! Flags as `KEY=VALUE` lines of a dotenv file that a service reads at
//! start: Plaza's `PLAZA_CUSTODIED_MODE_DISABLED=1` in its `.env`.
//!
//! The directory is opened with cap-std, so no flag name, value or file
//! name can reach a path outside it. A set rewrites the whole file through
//! a temporary file and an atomic rename, after copying the current file to
//! `FILE.previous`; lines it does not own (comments, other keys) are kept
//! as they were. Names must be environment-variable names and values one
//! plain token, so nothing a playbook passes can add a line or change how
//! the service's dotenv parser reads the file.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use tokio::sync::Mutex;

use super::{BackendError, BuildError, FlagStore};

pub struct EnvFile {
    name: String,
    dir: Arc<Dir>,
    file: String,
    /// Sets from concurrent runs go one at a time.
    lock: Mutex<()>,
}

impl EnvFile {
    /// Opens `dir` (which must exist) for the store `name`.
    pub fn open(name: &str, dir: &Path, file: &str) -> Result<EnvFile, BuildError> {
        let key = format!("flags.{name}");
        if file.is_empty() || file.contains(['/', '\\']) || file == "." || file == ".." {
            return Err(BuildError::Invalid {
                key: format!("{key}.file"),
                message: format!("`{file}` must be a file name inside `dir`, not a path"),
            });
        }
        let dir =
            Dir::open_ambient_dir(dir, ambient_authority()).map_err(|e| BuildError::Invalid {
                key: format!("{key}.dir"),
                message: format!("cannot open {}: {e}", dir.display()),
            })?;
        Ok(EnvFile {
            name: name.to_owned(),
            dir: Arc::new(dir),
            file: file.to_owned(),
            lock: Mutex::new(()),
        })
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::Failed(format!(
            "flag store `{}` ({}): {what}: {e}",
            self.name, self.file
        ))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Dir, &str) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, BackendError> {
        let dir = self.dir.clone();
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || work(&dir, &file))
            .await
            .map_err(|e| self.failed("worker", e))?
            .map_err(|e| self.failed("I/O", e))
    }

    async fn read(&self) -> Result<String, BackendError> {
        self.blocking(|dir, file| match dir.read_to_string(file) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        })
        .await
    }
}

/// A name the file can hold: an environment variable name.
fn check_name(name: &str) -> Result<(), BackendError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(BackendError::Invalid(format!(
            "flag name {name:?} cannot be an env file key; use letters, digits and `_`"
        )))
    }
}

/// A value the file can hold unquoted: one plain token.
fn check_value(value: &str) -> Result<(), BackendError> {
    let valid = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.,:/@+".contains(c));
    if valid {
        Ok(())
    } else {
        Err(BackendError::Invalid(format!(
            "flag value {value:?} cannot be written to an env file; use letters, digits and _-.,:/@+ only"
        )))
    }
}

/// The key of a `KEY=VALUE` (or `export KEY=VALUE`) line.
fn line_key(line: &str) -> Option<&str> {
    let line = line.trim_start();
    if line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("export ").unwrap_or(line);
    line.split_once('=').map(|(k, _)| k.trim())
}

fn lookup(text: &str, name: &str) -> Option<String> {
    text.lines()
        .filter(|line| line_key(line) == Some(name))
        .filter_map(|line| line.split_once('=').map(|(_, v)| v.trim()))
        .map(|v| v.trim_matches(['"', '\'']).to_owned())
        .next_back()
}

/// `text` with `name` set to `value`: its lines replaced in place, or one
/// line appended.
fn replace(text: &str, name: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len() + name.len() + value.len() + 2);
    let mut found = false;
    for line in text.lines() {
        if line_key(line) == Some(name) {
            if !found {
                out.push_str(&format!("{name}={value}\n"));
                found = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&format!("{name}={value}\n"));
    }
    out
}

/// Writes `text` as `file`: current file to `file.previous`, new text to a
/// temporary file, synced, renamed over `file`.
fn replace_file(dir: &Dir, file: &str, text: &str) -> std::io::Result<()> {
    match dir.read(file) {
        Ok(current) => dir.write(format!("{file}.previous"), current)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let temp = format!(".{file}.stepgate-tmp");
    let mut out = dir.create(&temp)?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    drop(out);
    dir.rename(&temp, dir, file)
}

#[async_trait::async_trait]
impl FlagStore for EnvFile {
    async fn get(&self, name: &str) -> Result<Option<String>, BackendError> {
        check_name(name)?;
        Ok(lookup(&self.read().await?, name))
    }

    async fn set(&self, name: &str, value: &str) -> Result<Option<String>, BackendError> {
        check_name(name)?;
        check_value(value)?;
        let _guard = self.lock.lock().await;
        let text = self.read().await?;
        let previous = lookup(&text, name);
        let updated = replace(&text, name, value);
        self.blocking(move |dir, file| replace_file(dir, file, &updated))
            .await?;
        Ok(previous)
    }

    /// The file reads, and a file can be made beside it (a set writes a
    /// temporary file there and renames it over the flags file).
    async fn probe(&self) -> Result<String, BackendError> {
        self.read().await?;
        self.blocking(|dir, file| {
            let probe = format!(".{file}.stepgate-doctor");
            dir.create(&probe)?;
            dir.remove_file(&probe)
        })
        .await?;
        Ok(format!(
            "`{}` reads and its directory takes new files",
            self.file
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> EnvFile {
        EnvFile::open("plaza", dir, ".env").unwrap()
    }

    #[tokio::test]
    async fn set_replaces_atomically_keeps_other_lines_and_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "# plaza\nDATABASE_POOL=10\nexport PLAZA_CUSTODIED_MODE_DISABLED=0\n",
        )
        .unwrap();
        let env = store(dir.path());
        assert_eq!(
            env.get("PLAZA_CUSTODIED_MODE_DISABLED").await.unwrap(),
            Some("0".into())
        );
        let previous = env.set("PLAZA_CUSTODIED_MODE_DISABLED", "1").await.unwrap();
        assert_eq!(previous, Some("0".into()));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".env")).unwrap(),
            "# plaza\nDATABASE_POOL=10\nPLAZA_CUSTODIED_MODE_DISABLED=1\n"
        );
        assert!(
            std::fs::read_to_string(dir.path().join(".env.previous"))
                .unwrap()
                .contains("PLAZA_CUSTODIED_MODE_DISABLED=0")
        );
        assert_eq!(env.set("NEW_FLAG", "on").await.unwrap(), None);
        assert_eq!(env.get("NEW_FLAG").await.unwrap(), Some("on".into()));
        // No temporary file is left beside them.
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".env", ".env.previous"]);
    }

    /// A reader of the file while sets replace it sees the whole file, old
    /// or new, never a part of one: every read has every line. The file is
    /// big enough (about 300 KB) that writing it in place would be seen
    /// half done.
    #[tokio::test]
    async fn a_concurrent_reader_never_sees_a_half_written_file() {
        const LINES: usize = 5_000;
        let dir = tempfile::tempdir().unwrap();
        let mut text: String = (0..LINES)
            .map(|i| format!("PAD_{i}=0123456789012345678901234567890123456789012345678\n"))
            .collect();
        text.push_str("FLAG=0\n");
        std::fs::write(dir.path().join(".env"), &text).unwrap();
        let env = store(dir.path());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (path, done) = (dir.path().join(".env"), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let seen = std::fs::read_to_string(&path).expect("the file is always there");
                    let lines: Vec<&str> = seen.lines().collect();
                    assert!(
                        seen.ends_with('\n')
                            && lines.len() == LINES + 1
                            && lines[LINES].starts_with("FLAG="),
                        "a reader saw a partial file: {} bytes, {} lines",
                        seen.len(),
                        lines.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 1..=200 {
            env.set("FLAG", &i.to_string()).await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = reader.join().expect("the reader saw only whole files");
        assert!(reads > 0);
        assert_eq!(env.get("FLAG").await.unwrap(), Some("200".into()));
    }

    #[tokio::test]
    async fn names_and_values_cannot_escape_the_file_or_add_lines() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("plaza");
        std::fs::create_dir(&inner).unwrap();
        let env = store(&inner);
        for name in ["../x", "a/b", "X=1", "X\nY", "", "1ABC", "X Y"] {
            let err = env.set(name, "1").await.unwrap_err();
            assert!(matches!(err, BackendError::Invalid(_)), "{name:?}: {err:?}");
        }
        for value in ["1\nEVIL=1", "a b", "$(reboot)", "\"q\"", "x#y"] {
            let err = env.set("FLAG", value).await.unwrap_err();
            assert!(
                matches!(err, BackendError::Invalid(_)),
                "{value:?}: {err:?}"
            );
        }
        assert!(!inner.join(".env").exists(), "nothing was written");
        assert!(!dir.path().join("x").exists());
        assert!(EnvFile::open("plaza", &inner, "../.env").is_err());
    }
}
