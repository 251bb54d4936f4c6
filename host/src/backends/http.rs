//! One HTTP transport for every backend that speaks HTTP: JSON-RPC nodes,
//! HTTP APIs, flag admin APIs, pager webhooks.
//!
//! It owns fail-over across an ordered list of URLs, retries with backoff,
//! per-attempt timeouts, secret headers, and the response size cap, so no
//! backend repeats them. Policy:
//! - a URL that cannot be reached, times out or answers 5xx passes the
//!   request to the next URL; any other answer is final;
//! - a request that is not idempotent (a write without an idempotency
//!   key) fails over only when it never left (connection refused): a write
//!   that may have arrived is never sent twice;
//! - idempotent requests (reads; pages with a dedup key) are retried
//!   `retries` times after every URL failed, waiting `backoff`, doubling;
//!   other writes never are.
//!
//! URLs and header values are secrets: errors name a URL by position
//! (`url #2`) and the journal by position and host, never by full text.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::{BackendError, BuildError};
use crate::config::RpcConfig;
use crate::secret::{Secret, SecretError};

/// Retries of idempotent requests to single-URL services (pager, flags).
const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);

/// An answer and which URL gave it.
#[derive(Debug, Clone)]
pub struct Answered<T> {
    pub value: T,
    /// `url #N (host:port)`, for the journal.
    pub via: String,
}

/// A finished response, body read (up to the cap).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// One request, independent of the URL it goes to.
pub struct Request<'a> {
    pub method: Method,
    /// Appended to the base URL (`""` for the URL itself).
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: Option<Vec<u8>>,
    pub json: bool,
    /// Whether sending it twice does no harm (reads, deduplicated pages).
    pub idempotent: bool,
    pub max_bytes: u64,
    /// What the call is, for messages: `eth_call`, `POST /flags`.
    pub what: &'a str,
}

pub struct Transport {
    name: String,
    urls: Vec<Url>,
    headers: HeaderMap,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    client: reqwest::Client,
}

/// Why one attempt failed, and whether the next URL may try.
enum Attempt {
    /// The next URL may try (and a read may be retried).
    Next { error: BackendError, sent: bool },
    /// Final: return this.
    Stop(BackendError),
}

impl Transport {
    /// A transport to `urls`, tried in order.
    pub fn new(
        name: &str,
        urls: Vec<Url>,
        headers: HeaderMap,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
    ) -> Transport {
        Transport {
            name: name.to_owned(),
            urls,
            headers,
            timeout,
            retries,
            backoff,
            client: client(),
        }
    }

    /// The transport of an `[rpc.NAME]` endpoint.
    pub fn from_config(
        name: &str,
        rpc: &RpcConfig,
        secret: &impl Fn(String, &Secret) -> Result<String, SecretError>,
    ) -> Result<Transport, BuildError> {
        let urls = rpc
            .urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                parse_url(
                    &format!("rpc.{name}.urls[{i}]"),
                    &secret(format!("rpc.{name}.urls[{i}]"), url)?,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headers = header_map(&format!("rpc.{name}.headers"), &rpc.headers, secret)?;
        Ok(Transport::new(
            name,
            urls,
            headers,
            rpc.timeout,
            rpc.retries,
            rpc.backoff,
        ))
    }

    /// A transport to one configured URL (webhooks, admin APIs).
    pub fn single(
        name: &str,
        key: &str,
        url: &Secret,
        headers: &std::collections::BTreeMap<String, Secret>,
        timeout: Duration,
        secret: &impl Fn(String, &Secret) -> Result<String, SecretError>,
    ) -> Result<Transport, BuildError> {
        let url = parse_url(&format!("{key}.url"), &secret(format!("{key}.url"), url)?)?;
        let headers = header_map(&format!("{key}.headers"), headers, secret)?;
        Ok(Transport::new(
            name,
            vec![url],
            headers,
            timeout,
            DEFAULT_RETRIES,
            DEFAULT_BACKOFF,
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends the request with fail-over and (for reads) retries.
    pub async fn send(&self, request: &Request<'_>) -> Result<Answered<Response>, BackendError> {
        let rounds = if request.idempotent {
            self.retries + 1
        } else {
            1
        };
        let mut failures: Vec<String> = Vec::new();
        let mut all_timeouts = true;
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(self.backoff.saturating_mul(1 << (round - 1).min(16))).await;
            }
            for (i, url) in self.urls.iter().enumerate() {
                match self.attempt(url, request).await {
                    Ok(response) => {
                        return Ok(Answered {
                            value: response,
                            via: via(i, url),
                        });
                    }
                    Err(Attempt::Stop(e)) => return Err(e),
                    Err(Attempt::Next { error, sent }) => {
                        all_timeouts &= matches!(error, BackendError::Timeout(_));
                        failures.push(format!("url #{}: {error}", i + 1));
                        if sent && !request.idempotent {
                            return Err(self.gave_up(request, &failures, all_timeouts, true));
                        }
                    }
                }
            }
        }
        Err(self.gave_up(request, &failures, all_timeouts, false))
    }

    /// Sends `request` once to each URL, for `stepgate doctor`: what each
    /// answered (`url #1 (host:port): HTTP 405`), or why it did not. A
    /// server error (5xx) is a failure; any other status is an answer.
    pub async fn reach(
        &self,
        request: &Request<'_>,
    ) -> Vec<Result<(String, Response), BackendError>> {
        let mut answers = Vec::with_capacity(self.urls.len());
        for (i, url) in self.urls.iter().enumerate() {
            let via = via(i, url);
            answers.push(match self.attempt(url, request).await {
                Ok(response) => Ok((via, response)),
                Err(Attempt::Stop(e) | Attempt::Next { error: e, .. }) => {
                    Err(BackendError::Failed(format!("{via}: {e}")))
                }
            });
        }
        answers
    }

    /// [`Transport::reach`] with a `HEAD` of each URL: it delivers nothing.
    pub async fn reach_head(&self) -> Vec<Result<String, BackendError>> {
        let request = Request {
            method: reqwest::Method::HEAD,
            path: "",
            headers: &[],
            body: None,
            json: false,
            idempotent: true,
            max_bytes: 1 << 16,
            what: "HEAD",
        };
        self.reach(&request)
            .await
            .into_iter()
            .map(|answer| {
                answer.map(|(via, r)| {
                    format!("{via}: reachable (HTTP {} to HEAD)", r.status.as_u16())
                })
            })
            .collect()
    }

    fn gave_up(
        &self,
        request: &Request<'_>,
        failures: &[String],
        all_timeouts: bool,
        write_sent: bool,
    ) -> BackendError {
        let message = if write_sent {
            format!(
                "{} on `{}`: the write may have arrived and is not sent again ({})",
                request.what,
                self.name,
                failures.join("; ")
            )
        } else {
            format!(
                "{} on `{}`: no URL answered ({})",
                request.what,
                self.name,
                failures.join("; ")
            )
        };
        if all_timeouts {
            BackendError::Timeout(message)
        } else {
            BackendError::Failed(message)
        }
    }

    async fn attempt(&self, base: &Url, request: &Request<'_>) -> Result<Response, Attempt> {
        let url =
            join(base, request.path).map_err(|why| Attempt::Stop(BackendError::Invalid(why)))?;
        let mut builder = self
            .client
            .request(request.method.clone(), url)
            .timeout(self.timeout);
        for (name, value) in request.headers {
            // The endpoint's own headers (auth) always win.
            if !self.headers.contains_key(name.as_str()) {
                builder = builder.header(name, value);
            }
        }
        builder = builder.headers(self.headers.clone());
        if request.json {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let mut response = builder.send().await.map_err(|e| self.send_error(e))?;
        let status = response.status();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() as u64 > request.max_bytes {
                        return Err(Attempt::Stop(BackendError::TooLarge {
                            what: format!("{} on `{}`", request.what, self.name),
                        }));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let error = if e.is_timeout() {
                        BackendError::Timeout(format!(
                            "answer not complete within {:?}",
                            self.timeout
                        ))
                    } else {
                        BackendError::Failed(e.without_url().to_string())
                    };
                    return Err(Attempt::Next { error, sent: true });
                }
            }
        }
        if status.is_server_error() {
            return Err(Attempt::Next {
                error: BackendError::Failed(format!("HTTP {status}")),
                sent: true,
            });
        }
        Ok(Response {
            status,
            headers: response.headers().clone(),
            body,
        })
    }

    fn send_error(&self, e: reqwest::Error) -> Attempt {
        if e.is_timeout() {
            Attempt::Next {
                error: BackendError::Timeout(format!("no answer within {:?}", self.timeout)),
                sent: true,
            }
        } else {
            Attempt::Next {
                // A connect error means nothing was sent.
                sent: !e.is_connect(),
                error: BackendError::Failed(describe(&e)),
            }
        }
    }
}

/// reqwest's message without the URL, plus the root cause (e.g.
/// "Connection refused"), which reqwest keeps in the source chain.
fn describe(e: &reqwest::Error) -> String {
    let mut message = if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    if let Some(last) = last {
        message.push_str(": ");
        message.push_str(&last);
    }
    message
}

fn via(i: usize, url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("url #{} ({host}:{port})", i + 1),
        None => format!("url #{} ({host})", i + 1),
    }
}

/// The HTTP client of every transport. It never follows a redirect: the
/// scope checked one path on one origin, and a redirect would send the
/// request (and the endpoint's secret headers) somewhere else. The
/// playbook sees the 3xx answer instead.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// `base` + `path`, keeping the base's own path and query.
///
/// A playbook's query string (allowed only on `?*` routes) is added after
/// the base's own parameters, never in place of them, and may not name a
/// parameter the base sets: a server that reads the last of two values
/// would otherwise take the playbook's over the operator's.
fn join(base: &Url, path: &str) -> Result<Url, String> {
    if path.is_empty() {
        return Ok(base.clone());
    }
    let mut url = base.clone();
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        // Read as the most lenient server would: `;` separates too.
        let names = |query: &str| -> Vec<String> {
            let mut url = base.clone();
            url.set_query(Some(&query.replace(';', "&")));
            url.query_pairs().map(|(k, _)| k.into_owned()).collect()
        };
        let fixed = names(base.query().unwrap_or_default());
        let clash = names(query)
            .into_iter()
            .find(|theirs| fixed.iter().any(|own| clashes(own, theirs)));
        if let Some(name) = clash {
            return Err(format!(
                "the query parameter `{}` is set by the endpoint's URL; a playbook may not set it",
                crate::inert::line(&name)
            ));
        }
        let combined = match base.query().filter(|q| !q.is_empty()) {
            Some(own) => format!("{own}&{query}"),
            None => query.to_owned(),
        };
        url.set_query(Some(&combined));
    }
    Ok(url)
}

/// A query parameter's name as lenient servers read it: PHP cuts it at a
/// NUL, drops leading spaces, reads `.` and ` ` (and an unclosed `[`) as
/// `_`; case is folded too.
fn lenient(name: &str) -> String {
    let name = name.split('\0').next().unwrap_or_default();
    let name = name.trim_start_matches(' ');
    let name = if name.contains('[') && !name.contains(']') {
        name.replacen('[', "_", 1)
    } else {
        name.to_owned()
    };
    name.chars()
        .map(|c| match c {
            '.' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whether a playbook's parameter `theirs` would override the URL's own
/// parameter `own` on a lenient server: the same name, or the same root
/// where one side is a plain value (`tenant[]=x` or `tenant[a]=x` replaces
/// `tenant`, and `filter=x` replaces `filter[tenant]`); two different keys
/// of one array (`filter[tenant]`, `filter[state]`) do not clash.
fn clashes(own: &str, theirs: &str) -> bool {
    let (own, theirs) = (lenient(own), lenient(theirs));
    let root = |name: &str| name.split('[').next().unwrap_or(name).to_owned();
    own == theirs || (root(&own) == root(&theirs) && (!own.contains('[') || !theirs.contains('[')))
}

/// Parses a resolved URL; the message never quotes it.
pub fn parse_url(key: &str, text: &str) -> Result<Url, BuildError> {
    let url = Url::parse(text).map_err(|e| BuildError::Invalid {
        key: key.to_owned(),
        message: format!("not a URL ({e})"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BuildError::Invalid {
            key: key.to_owned(),
            message: "only http and https URLs are supported".to_owned(),
        });
    }
    Ok(url)
}

/// Resolves configured headers; every value is marked sensitive so reqwest
/// never prints it either.
pub fn header_map(
    key: &str,
    headers: &std::collections::BTreeMap<String, Secret>,
    secret: &impl Fn(String, &Secret) -> Result<String, SecretError>,
) -> Result<HeaderMap, BuildError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let at = format!("{key}.{name}");
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| BuildError::Invalid {
            key: at.clone(),
            message: "not a valid header name".to_owned(),
        })?;
        let value = secret(at.clone(), value)?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| BuildError::Invalid {
            key: at.clone(),
            message: "the value is not a valid header value (newline or control character?)"
                .to_owned(),
        })?;
        value.set_sensitive(true);
        map.insert(header, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_onto_the_base_path() {
        let base = Url::parse("https://api.example/v1/").unwrap();
        assert_eq!(
            join(&base, "/admin/flags?x=1").unwrap().as_str(),
            "https://api.example/v1/admin/flags?x=1"
        );
        let bare = Url::parse("http://127.0.0.1:8545").unwrap();
        assert_eq!(join(&bare, "").unwrap().as_str(), "http://127.0.0.1:8545/");
        assert_eq!(via(1, &bare), "url #2 (127.0.0.1:8545)");
    }

    #[test]
    fn a_playbook_query_adds_to_the_base_query_and_never_replaces_it() {
        let base = Url::parse("https://api.example/v1?tenant=plaza&key=k").unwrap();
        assert_eq!(
            join(&base, "/rows?limit=5").unwrap().as_str(),
            "https://api.example/v1/rows?tenant=plaza&key=k&limit=5"
        );
        assert_eq!(
            join(&base, "/rows").unwrap().as_str(),
            "https://api.example/v1/rows?tenant=plaza&key=k"
        );
        let err = join(&base, "/rows?limit=5&tenant=other").unwrap_err();
        assert!(err.contains("`tenant`"), "{err}");
        assert!(join(&base, "/rows?%74enant=other").is_err());
        // Spellings a lenient server reads as `tenant` or `key`.
        for query in ["limit=5;tenant=x", "tenant[]=x", "TENANT=x", "ke%79=x"] {
            assert!(join(&base, &format!("/rows?{query}")).is_err(), "{query}");
        }
        let api = Url::parse("https://api.example/v1?api_key=k").unwrap();
        for query in [
            "api.key=x",
            "api%20key=x",
            "api+key=x",
            "+api_key=x",
            "api[key=x",
            "api_key%00=x",
            "api_key[x]=y",
        ] {
            assert!(join(&api, &format!("/rows?{query}")).is_err(), "{query}");
        }
        // Another key of the URL's own array is no clash; the array's
        // own key, or the array replaced by a value, is.
        let jsonapi = Url::parse("https://api.example/v1?filter[tenant]=acme").unwrap();
        assert!(join(&jsonapi, "/rows?filter[state]=open&page[size]=10").is_ok());
        assert!(join(&jsonapi, "/rows?filter[tenant]=x").is_err());
        assert!(join(&jsonapi, "/rows?filter=x").is_err());
        // The URL's own `;`-separated parameters count too.
        let semi = Url::parse("https://api.example/v1?a=1;tenant=acme").unwrap();
        assert!(join(&semi, "/rows?tenant=x").is_err());
    }
}
