//! Text from a playbook, an alert or a backend, made inert before a human
//! sees it.
//!
//! A reason, a step name, a log line, an alert label or a database value
//! can carry escape sequences that clear a terminal and print a fake
//! "approved by alice", a right-to-left override that shows a different
//! amount, or Slack markup that pings a whole channel. Everything stepgate
//! prints goes through this module:
//!
//! - [`text`] rewrites every control character (but newline and tab),
//!   DEL, the C1 controls, the bidirectional overrides and isolates, the
//!   zero-width and other invisible characters (soft hyphen, fillers,
//!   variation selectors, tags) and the line and paragraph separators as
//!   a visible `\uXXXX` (a surrogate pair beyond U+FFFF). The same escape is valid inside a JSON string, so
//!   the filter keeps `--json` output valid JSON with the same meaning.
//! - [`line()`] also shows newline and tab as `\n` and `\t`, for a value
//!   that must stay on its own line (a field, a reason, a step name).
//! - [`Writer`] applies [`text`] to a whole output stream, and the
//!   [`outln!`](crate::outln) and [`errln!`](crate::errln) macros print
//!   through it (a closed pipe ends the output quietly, never a panic).
//! - [`slack`] escapes `&`, `<` and `>` as Slack asks, so no mention
//!   (`<!channel>`) or link markup survives.
//!
//! It only rewrites text; it decides nothing.

use std::borrow::Cow;
use std::io::{self, Write};

/// Whether `c` must not reach a terminal as itself.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        // C0 (but newline and tab), DEL and C1 controls.
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        // Unicode's default-ignorable code points (they render as nothing:
        // soft hyphen, combining grapheme joiner, Arabic letter mark,
        // Hangul and Khmer fillers, Mongolian selectors, zero-width marks,
        // bidirectional embeddings, overrides and isolates, invisible
        // operators, variation selectors, byte-order mark, shorthand
        // format controls, musical format controls, tags), the line and
        // paragraph separators, and the interlinear annotation marks.
        | '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}'
        | '\u{17b4}' | '\u{17b5}' | '\u{180b}'..='\u{180f}'
        | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}'
        | '\u{feff}' | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}'
        | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0000}'..='\u{e0fff}'
    )
}

fn escape(text: &str, also: impl Fn(char) -> Option<&'static str>) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) || also(c).is_some()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if let Some(shown) = also(c) {
            out.push_str(shown);
        } else if is_unsafe(c) {
            // UTF-16 units, as JSON spells a character beyond U+FFFF (a
            // surrogate pair), so the escape means the same inside JSON.
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04X}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` with every unsafe character shown as `\uXXXX`.
pub fn text(text: &str) -> Cow<'_, str> {
    escape(text, |_| None)
}

/// [`text`], with newline and tab shown as `\n` and `\t` too.
pub fn line(text: &str) -> Cow<'_, str> {
    escape(text, |c| match c {
        '\n' => Some("\\n"),
        '\t' => Some("\\t"),
        _ => None,
    })
}

/// `text` for a Slack message: inert as [`line()`] (newlines kept), with
/// `&`, `<` and `>` escaped so that no mention or link markup is read.
pub fn slack(text: &str) -> String {
    escape(text, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    })
    .into_owned()
}

/// A writer that passes everything through [`text`].
pub struct Writer<W: Write> {
    inner: W,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Writer<W> {
        Writer { inner }
    }
}

impl<W: Write> Write for Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shown = String::from_utf8_lossy(buf);
        self.inner.write_all(text(&shown).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Prints to stdout through [`Writer`]; a closed stdout ends the process
/// quietly (as `head` expects), never with a panic.
pub fn print_out(args: std::fmt::Arguments<'_>) {
    let stdout = io::stdout();
    let mut out = Writer::new(stdout.lock());
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush())
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Prints to stderr through [`Writer`]; errors are ignored.
pub fn print_err(args: std::fmt::Arguments<'_>) {
    let stderr = io::stderr();
    let _ = Writer::new(stderr.lock()).write_fmt(args);
}

/// `println!` through [`Writer`].
#[macro_export]
macro_rules! outln {
    () => { $crate::inert::print_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::inert::print_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` through [`Writer`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::inert::print_out(format_args!($($arg)*)) };
}

/// `eprintln!` through [`Writer`].
#[macro_export]
macro_rules! errln {
    () => { $crate::inert::print_err(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::inert::print_err(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_overrides_are_shown_not_obeyed() {
        let hostile = "ok\u{1b}[2J\u{1b}[H approved by alice\r\u{202e}0001\u{7f}\u{9b}";
        let shown = text(hostile);
        assert!(!shown.chars().any(is_unsafe), "{shown}");
        assert_eq!(
            shown,
            "ok\\u001B[2J\\u001B[H approved by alice\\u000D\\u202E0001\\u007F\\u009B"
        );
        assert_eq!(text("plain text\n"), "plain text\n");
        // Invisible letters, fillers and tags (a hidden ASCII text) show.
        assert_eq!(
            text("pay\u{ad}\u{3164}\u{115f}\u{180e}\u{fe0f}\u{e0041}\u{34f}\u{1d173}"),
            "pay\\u00AD\\u3164\\u115F\\u180E\\uFE0F\\uDB40\\uDC41\\u034F\\uD834\\uDD73"
        );
        assert_eq!(text("é ü 中文 🙂"), "é ü 中文 🙂");
        assert!(matches!(text("plain"), Cow::Borrowed(_)));
        assert_eq!(line("two\nlines\tand tab"), "two\\nlines\\tand tab");
    }

    #[test]
    fn the_filter_keeps_json_valid_and_equal() {
        let value = serde_json::json!({
            "reason": "a\u{1b}[31m\u{202e}b\u{7f}\u{85}\u{e0041}\u{ad}\u{3164}\u{fe0f}"
        });
        let printed = value.to_string();
        let filtered = text(&printed);
        assert!(!filtered.chars().any(is_unsafe));
        let back: serde_json::Value = serde_json::from_str(&filtered).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn slack_markup_is_escaped() {
        assert_eq!(
            slack("<!channel> see <https://evil|docs> & \u{1b}[2J"),
            "&lt;!channel&gt; see &lt;https://evil|docs&gt; &amp; \\u001B[2J"
        );
    }

    #[test]
    fn the_writer_filters_a_stream() {
        let mut out = Writer::new(Vec::new());
        write!(out, "step \u{1b}]0;title\u{7} done").unwrap();
        assert_eq!(
            String::from_utf8(out.inner).unwrap(),
            "step \\u001B]0;title\\u0007 done"
        );
    }
}
