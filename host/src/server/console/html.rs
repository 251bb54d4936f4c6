//! HTML for the console: escaping and the page frame. Every string that
//! reaches a page from a playbook, an alert, a backend or a principal goes
//! through [`esc`] (or [`Html::text`]), which makes it inert twice over:
//! invisible and direction-changing characters become visible escapes
//! ([`crate::inert::text`]), then `& < > " '` become entities, so no markup,
//! attribute or script can be injected, in element text or in a quoted
//! attribute. The frame carries a Content-Security-Policy that allows only
//! this server's own script and style, so even a missed escape could not
//! run a script.

use std::fmt::Write as _;

/// `text` safe inside HTML element text and quoted attribute values.
pub fn esc(text: &str) -> String {
    let text = crate::inert::text(text);
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page body being written. `push` takes trusted markup (written in
/// this module's callers); `text` escapes.
#[derive(Default)]
pub struct Html(String);

impl Html {
    pub fn new() -> Html {
        Html::default()
    }

    /// Markup the console itself writes (no outside text in it).
    pub fn push(&mut self, markup: &str) -> &mut Html {
        self.0.push_str(markup);
        self
    }

    /// Outside text, escaped.
    pub fn text(&mut self, text: &str) -> &mut Html {
        self.0.push_str(&esc(text));
        self
    }

    /// `<tag class="…">text</tag>` with the text escaped.
    pub fn el(&mut self, tag: &str, class: &str, text: &str) -> &mut Html {
        let _ = write!(self.0, "<{tag} class=\"{class}\">{}</{tag}>", esc(text));
        self
    }

    /// The markup so far, for a `write!` whose every outside value is
    /// passed through [`esc`].
    pub fn raw(&mut self) -> &mut String {
        &mut self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Who is signed in, for the page header.
pub struct Viewer<'a> {
    pub principal: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
}

/// The whole page: head, the header with navigation and sign-out, `body`.
pub fn page(title: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · stepgate</title><link rel=\"stylesheet\" href=\"/ui/static/console.css\">\
         <script src=\"/ui/static/console.js\" defer></script>",
        esc(title)
    );
    if let Some(viewer) = viewer {
        let _ = write!(
            out,
            "<meta name=\"csrf-token\" content=\"{}\">",
            esc(viewer.csrf)
        );
    }
    out.push_str("</head><body><header><a class=\"brand\" href=\"/ui/\">stepgate</a>");
    if let Some(viewer) = viewer {
        let _ = write!(
            out,
            "<nav><a href=\"/ui/\">Approvals</a><a href=\"/ui/runs\">Runs</a></nav>\
             <span class=\"who\">{} <small>({})</small></span>\
             <form method=\"post\" action=\"/ui/logout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" class=\"link\">Sign out</button></form>",
            esc(viewer.principal),
            esc(viewer.role),
            esc(viewer.csrf)
        );
    }
    out.push_str("</header><main>");
    out.push_str(body);
    out.push_str("</main></body></html>");
    out
}

/// The console's one stylesheet: no web fonts, no CDN.
pub const CSS: &str = r#"
:root { --ink:#1d2329; --muted:#5d6872; --line:#d9dee3; --bg:#f6f7f9; --write:#b3261e; --ok:#1b6e3a; --warn:#8a5a00; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--ink); background:var(--bg); }
header { display:flex; gap:1.2rem; align-items:center; padding:.6rem 1.2rem; background:#20262d; color:#fff; }
header a { color:#fff; text-decoration:none; }
header nav a { margin-right:1rem; opacity:.9; }
.brand { font-weight:700; letter-spacing:.02em; }
.who { margin-left:auto; }
main { padding:1.2rem; max-width:1200px; }
h1 { font-size:1.3rem; margin:.2rem 0 1rem; }
h2 { font-size:1.05rem; margin:1.4rem 0 .5rem; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:.35rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef1f4; font-weight:600; }
td.num, th.num { text-align:right; white-space:nowrap; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size:12.5px; }
pre { background:#fff; border:1px solid var(--line); padding:.6rem; overflow:auto; white-space:pre-wrap; word-break:break-word; margin:0; }
.card { background:#fff; border:1px solid var(--line); padding:.8rem 1rem; margin-bottom:1rem; }
.write { color:var(--write); font-weight:600; }
.read { color:var(--muted); }
.status { display:inline-block; padding:.05rem .45rem; border-radius:.6rem; background:#e3e7eb; font-size:12px; }
.status.done { background:#d7eedf; color:var(--ok); }
.status.parked, .status.pending { background:#fbecc8; color:var(--warn); }
.status.failed, .status.denied, .status.crashed, .status.cancelled, .status.limit, .status.in-doubt { background:#f6d6d3; color:var(--write); }
.diff { display:grid; grid-template-columns: 16rem 1fr; gap:.2rem .8rem; }
.diff .old { background:#fde8e6; } .diff .new { background:#e3f4e8; }
.note { color:var(--muted); }
.error { background:#fde8e6; border:1px solid #f3b8b2; padding:.6rem .8rem; margin-bottom:1rem; }
.success { background:#e3f4e8; border:1px solid #b5dcc2; padding:.6rem .8rem; margin-bottom:1rem; }
form.decide textarea { width:100%; min-height:4.5rem; font:inherit; }
form.decide .buttons { margin-top:.5rem; display:flex; gap:.6rem; }
button { font:inherit; padding:.35rem .9rem; border:1px solid #9aa5ae; background:#fff; cursor:pointer; }
button.approve { background:var(--ok); color:#fff; border-color:var(--ok); }
button.deny { background:#fff; color:var(--write); border-color:var(--write); }
button.link { background:none; border:none; color:#fff; text-decoration:underline; padding:0; }
form.inline { display:inline; }
.step-row td { background:#eef1f4; font-weight:600; }
table.args th { width:10rem; }
table.args pre { border:none; padding:0; }
input[type=password] { font:inherit; padding:.35rem; width:32rem; max-width:100%; }
"#;

/// The console's one script: it refreshes a live run's timeline by
/// fetching the server-rendered fragment (escaped there) every two
/// seconds, until the run stops moving. No framework, no build step.
pub const JS: &str = r#"
document.addEventListener('DOMContentLoaded', function () {
  var live = document.getElementById('timeline');
  if (!live || live.dataset.live !== 'true') return;
  var url = live.dataset.src;
  var tick = function () {
    fetch(url, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var box = document.createElement('div');
        box.innerHTML = html;
        var fresh = box.firstElementChild;
        if (!fresh) return;
        live.replaceWith(fresh);
        live = fresh;
        if (live.dataset.live === 'true') setTimeout(tick, 2000);
      })
      .catch(function () { setTimeout(tick, 5000); });
  };
  setTimeout(tick, 2000);
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_cannot_become_markup() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        // A right-to-left override is shown, not obeyed.
        assert_eq!(esc("pay 100\u{202e}0001"), "pay 100\\u202E0001");
        let mut html = Html::new();
        html.el("td", "x", "<img src=x onerror=alert(1)>");
        assert_eq!(
            html.into_string(),
            "<td class=\"x\">&lt;img src=x onerror=alert(1)&gt;</td>"
        );
    }
}
