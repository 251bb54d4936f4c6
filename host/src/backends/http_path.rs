//! One normal form for the path of a playbook's HTTP request.
//!
//! The scope checks a path against the granted routes, and the transport
//! sends a path; if the two read the text differently, a grant of
//! `POST /admin/x` reaches `/admin/stop` (`/admin/x#/../stop`, or
//! `/admin/x/%2e%2e/stop` for a server that decodes before it resolves).
//! So a request's path is normalised here, once: the scope checks that
//! form and the transport sends exactly that form.
//!
//! - Percent-encoded unreserved characters are decoded (`%2e` is `.`),
//!   other escapes upper-cased; an encoded `/`, `\` or NUL, a bad escape, a
//!   fragment (`#`), a `;` (path parameters, which some servers strip), a
//!   backslash, a space, a control or a non-ASCII character is refused.
//! - Empty segments (`//`) and `.` segments are dropped; `..` removes the
//!   segment before it, and a `..` above the root is refused.
//! - The query string (after the first `?`) is kept apart, unchanged but
//!   for the same character checks; whether one is allowed is the route's
//!   business.
//!
//! It only rewrites or refuses text; it grants nothing.

/// A request target in normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// Starts with `/`; no empty, `.` or `..` segment.
    pub path: String,
    /// The query string without its `?`, if the request has one.
    pub query: Option<String>,
}

impl NormalPath {
    /// The request target as sent: path, then `?query` if any.
    pub fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Characters RFC 3986 calls unreserved: decoded wherever they are escaped.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path or query may carry literally (RFC 3986 `pchar`,
/// plus `/` and `?` in a query), `;` left out of paths on purpose.
fn allowed(b: u8, in_query: bool) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
        || b == b'/'
        || (in_query && matches!(b, b'?' | b';'))
}

/// Decodes unreserved escapes, upper-cases the others, refuses the
/// characters no server reads the same way.
fn canonical_escapes(text: &str, in_query: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    "it holds a `%` that is not followed by two hex digits".to_owned()
                })?;
            match hex {
                b'/' | b'\\' if !in_query => {
                    return Err("it holds an encoded `/` or `\\` (%2F, %5C)".to_owned());
                }
                0 => return Err("it holds an encoded NUL (%00)".to_owned()),
                h if unreserved(h) => out.push(char::from(h)),
                h => out.push_str(&format!("%{h:02X}")),
            }
            i += 3;
            continue;
        }
        if !allowed(b, in_query) {
            let what = match b {
                b'#' => "a fragment (`#`)".to_owned(),
                b';' => "a `;` (path parameters)".to_owned(),
                b'\\' => "a backslash".to_owned(),
                b if b.is_ascii() => format!("the character {:?}", char::from(b)),
                _ => "a non-ASCII character".to_owned(),
            };
            return Err(format!(
                "it holds {what}; percent-encode data, not structure"
            ));
        }
        if in_query && b == b'\'' {
            // The URL library escapes it in a query; send what is checked.
            out.push_str("%27");
        } else {
            out.push(char::from(b));
        }
        i += 1;
    }
    Ok(out)
}

/// Normalises `raw` (what the playbook asked for) or says why it cannot.
pub fn normalise(raw: &str) -> Result<NormalPath, String> {
    let refuse = |why: String| format!("the HTTP path {raw:?} is refused: {why}");
    if !raw.starts_with('/') {
        return Err(refuse("it must start with `/`".to_owned()));
    }
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    let path = canonical_escapes(path, false).map_err(refuse)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(refuse("its `..` climbs above the root".to_owned()));
                }
            }
            s => segments.push(s),
        }
    }
    let mut normal = format!("/{}", segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        normal.push('/');
    }
    let query = query
        .map(|q| canonical_escapes(q, true))
        .transpose()
        .map_err(refuse)?;
    Ok(NormalPath {
        path: normal,
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> String {
        normalise(raw).map(|p| p.target()).unwrap_or_else(|e| e)
    }

    #[test]
    fn dot_segments_and_double_slashes_resolve_once() {
        assert_eq!(path("/admin/x"), "/admin/x");
        assert_eq!(path("/admin/./x"), "/admin/x");
        assert_eq!(path("/admin//x"), "/admin/x");
        assert_eq!(path("/admin/y/../x"), "/admin/x");
        assert_eq!(path("/admin/x/%2e%2E/stop"), "/admin/stop");
        assert_eq!(path("/admin/x/.%2e/stop"), "/admin/stop");
        assert_eq!(path("/"), "/");
        assert_eq!(path("/a/b/"), "/a/b/");
        assert_eq!(path("/%7Euser"), "/~user");
        assert_eq!(path("/a%3ab"), "/a%3Ab");
    }

    #[test]
    fn what_servers_read_differently_is_refused() {
        for raw in [
            "/admin/x#/../stop",
            "/admin/x%2F..%2Fstop",
            "/admin/x%5c..%5cstop",
            "/admin\\..\\stop",
            "/admin/..;/stop",
            "/admin/x;jsessionid=1",
            "/../etc/passwd",
            "/a/%2e%2e/%2e%2e",
            "/a%00",
            "/a%zz",
            "/a%2",
            "/a b",
            "/a\u{7f}",
            "/caf\u{e9}",
            "admin/x",
            "",
        ] {
            assert!(normalise(raw).is_err(), "{raw:?} should be refused");
        }
    }

    #[test]
    fn the_query_is_kept_apart() {
        let n = normalise("/admin/pods/restart?all=true&x=%2f").unwrap();
        assert_eq!(n.path, "/admin/pods/restart");
        assert_eq!(n.query.as_deref(), Some("all=true&x=%2F"));
        assert!(normalise("/a?b#c").is_err());
    }
}
