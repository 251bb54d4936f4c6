//! Authoring playbooks in any language that compiles to a component:
//! which languages stepgate knows, how to tell a built component's
//! language, scaffolding a new playbook (`stepgate new`) and building a
//! playbook folder with its language's toolchain (`stepgate build`), and
//! what a playbook declares in the config's words (`stepgate inspect`).
//!
//! The WIT contract and the Python and JavaScript SDKs are compiled into
//! the binary, so a build always uses the contract this host speaks. This
//! module only writes files and runs the toolchains; it never loads or runs
//! a component (that is [`crate::playbook`]'s job).

pub mod grants;
pub mod scaffold;
pub mod toolchain;

use std::fmt;
use std::path::Path;

/// A language playbooks are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::Rust, Language::Python, Language::JavaScript];

    /// The name `--lang` takes.
    pub fn flag(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "js",
        }
    }

    /// The file that marks a playbook folder as written in this language.
    pub fn marker(self) -> &'static str {
        match self {
            Language::Rust => "Cargo.toml",
            Language::Python => "app.py",
            Language::JavaScript => "app.js",
        }
    }

    /// The language of the playbook folder `dir`, by its marker file.
    pub fn of_folder(dir: &Path) -> Option<Language> {
        Language::ALL
            .into_iter()
            .find(|l| dir.join(l.marker()).is_file())
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
        })
    }
}

impl std::str::FromStr for Language {
    type Err = String;

    fn from_str(s: &str) -> Result<Language, String> {
        match s.to_ascii_lowercase().as_str() {
            "rust" | "rs" => Ok(Language::Rust),
            "python" | "py" => Ok(Language::Python),
            "js" | "javascript" => Ok(Language::JavaScript),
            other => Err(format!(
                "unknown language `{other}`: use rust, python or js"
            )),
        }
    }
}

/// What a component says about how it was made: its `producers` sections,
/// and the runtime a Python or JavaScript component embeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Producers {
    /// The interpreter the component embeds, if it is one stepgate knows:
    /// componentize-py links `libcomponentize_py_runtime.so`,
    /// componentize-js embeds StarlingMonkey (SpiderMonkey).
    pub interpreter: Option<Language>,
    /// `language` entries, e.g. "Rust".
    pub languages: Vec<String>,
    /// `processed-by` entries as "name version", e.g. "componentize-py 0.25.1".
    pub tools: Vec<String>,
}

impl Producers {
    /// Reads every `producers` custom section of `bytes`, the component's
    /// own and its core modules'. A malformed section is skipped: this is
    /// for showing, never for deciding what runs.
    pub fn of_component(bytes: &[u8]) -> Producers {
        let mut found = Producers::default();
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            let Ok(wasmparser::Payload::CustomSection(section)) = payload else {
                continue;
            };
            let wasmparser::KnownCustom::Producers(reader) = section.as_known() else {
                continue;
            };
            for field in reader.into_iter().flatten() {
                let into = match field.name {
                    "language" => &mut found.languages,
                    "processed-by" => &mut found.tools,
                    _ => continue,
                };
                for value in field.values.into_iter().flatten() {
                    let entry = if field.name == "language" || value.version.is_empty() {
                        value.name.to_owned()
                    } else {
                        format!("{} {}", value.name, value.version)
                    };
                    if !into.contains(&entry) {
                        into.push(entry);
                    }
                }
            }
        }
        let has = |marker: &[u8]| memchr::memmem::find(bytes, marker).is_some();
        found.interpreter = if has(b"libcomponentize_py_runtime") {
            Some(Language::Python)
        } else if has(b"StarlingMonkey") {
            Some(Language::JavaScript)
        } else {
            None
        };
        found
    }

    /// The language the playbook was written in. A Python or JavaScript
    /// component embeds its interpreter (written in C, C++ and Rust), so
    /// the toolchain that made it decides before the languages listed.
    pub fn language(&self) -> Option<Language> {
        if self.interpreter.is_some() {
            self.interpreter
        } else if self.languages.iter().any(|l| l == "Rust") {
            Some(Language::Rust)
        } else {
            None
        }
    }

    /// The `processed-by` entry whose name starts with `prefix` (any case).
    fn tool(&self, prefix: &str) -> Option<&str> {
        self.tools
            .iter()
            .find(|t| t.to_ascii_lowercase().starts_with(prefix))
            .map(String::as_str)
    }

    /// One line for `stepgate inspect`: "Python (componentize-py 0.25.1)".
    pub fn describe(&self) -> String {
        let (language, tool) = match self.language() {
            Some(Language::Python) => ("Python".to_owned(), Some("componentize-py")),
            Some(Language::JavaScript) => ("JavaScript".to_owned(), Some("componentize-js")),
            Some(Language::Rust) => ("Rust".to_owned(), self.tool("rustc")),
            None if self.languages.is_empty() => ("unknown".to_owned(), None),
            None => (self.languages.join(", "), None),
        };
        match tool {
            Some(tool) => format!("{language} ({tool})"),
            None => language,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_names_parse_and_print() {
        for language in Language::ALL {
            assert_eq!(language.flag().parse::<Language>(), Ok(language));
        }
        assert_eq!("Python".parse::<Language>(), Ok(Language::Python));
        let bad = "cobol".parse::<Language>().unwrap_err();
        assert!(bad.contains("rust, python or js"), "{bad}");
    }

    #[test]
    fn the_toolchain_decides_over_the_embedded_languages() {
        let python = Producers {
            interpreter: Some(Language::Python),
            languages: vec!["C11".into(), "Rust".into()],
            tools: vec!["rustc 1.90.0".into()],
        };
        assert_eq!(python.language(), Some(Language::Python));
        assert_eq!(python.describe(), "Python (componentize-py)");
        let rust = Producers {
            interpreter: None,
            languages: vec!["Rust".into()],
            tools: vec!["rustc 1.95.0".into()],
        };
        assert_eq!(rust.language(), Some(Language::Rust));
        assert_eq!(rust.describe(), "Rust (rustc 1.95.0)");
        assert_eq!(Producers::default().describe(), "unknown");
    }
}
