//! The `rpc` capability against a real Ethereum node (ganache, started on
//! loopback) and against recording HTTP receivers for what a node cannot be
//! made to do on cue: fail, stall, answer too much, echo a secret.

use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use stepgate::bindings::WitError;
use stepgate::bindings::stepgate::playbook::rpc::{Host, HttpRequest, HttpResponse};
use stepgate::caps::{CallCtx, CapError};
use stepgate::gate::{Decision, Mode};
use stepgate::runtime::Runtime;
use stepgate_tests::receiver::{Receiver, Reply};
use stepgate_tests::servers::{Ganache, free_port};
use stepgate_tests::{Setup, call_ctx, secret_file};

const ETH_METHODS: &str = r#"
[rpc.eth.methods]
eth_blockNumber = "read"
eth_getBalance = "read"
eth_getTransactionCount = "read"
eth_call = "read"
eth_sendRawTransaction = "write"
"#;

/// A config with endpoint `eth` at `urls` (TOML list text) and `extra`
/// endpoint settings, granted to playbook `p` with auto gates.
fn setup(urls: &str, extra: &str) -> (Setup, Runtime) {
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"

[rpc.eth]
kind = "json-rpc"
urls = {urls}
{extra}
{ETH_METHODS}

[playbooks.p]
component = "unused.wasm"
gates = {{ default = "auto" }}
grants.rpc.eth.methods = ["eth_blockNumber", "eth_getBalance", "eth_getTransactionCount", "eth_call", "eth_sendRawTransaction"]
"#
    ));
    let runtime = setup.runtime();
    (setup, runtime)
}

async fn call(ctx: &mut CallCtx, method: &str, params: Json) -> Result<Json, CapError> {
    let reason = if method == "eth_sendRawTransaction" {
        "test: rebroadcast"
    } else {
        ""
    };
    Host::call(
        ctx,
        "eth".into(),
        method.into(),
        params.to_string(),
        reason.into(),
    )
    .await
    .map(|text| serde_json::from_str(&text).unwrap())
}

fn wit<T: std::fmt::Debug>(result: Result<T, CapError>) -> WitError {
    match result {
        Err(CapError::Wit(e)) => e,
        other => panic!("expected a WIT error, got {other:?}"),
    }
}

fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn reads_from_a_real_node_match_the_node() {
    let node = Ganache::start().await;
    let account = node.account().await;
    let contract = node.deploy_answer_42().await;
    let (_setup, runtime) = setup(&format!("[\"{}\"]", node.url), "");
    let mut ctx = call_ctx(&runtime, "p", Mode::Live);

    let block = call(&mut ctx, "eth_blockNumber", json!([])).await.unwrap();
    assert_eq!(block, node.rpc("eth_blockNumber", json!([])).await);
    assert_ne!(block, json!("0x0"), "deploying the contract mined a block");

    let balance = call(&mut ctx, "eth_getBalance", json!([account, "latest"]))
        .await
        .unwrap();
    assert_eq!(
        balance,
        node.rpc("eth_getBalance", json!([account, "latest"])).await
    );
    let nonce = call(
        &mut ctx,
        "eth_getTransactionCount",
        json!([account, "pending"]),
    )
    .await
    .unwrap();
    assert_eq!(nonce, json!("0x1"), "one transaction (the deploy) sent");

    let answer = call(
        &mut ctx,
        "eth_call",
        json!([{ "to": contract, "data": "0x" }, "latest"]),
    )
    .await
    .unwrap();
    assert_eq!(
        answer,
        json!("0x000000000000000000000000000000000000000000000000000000000000002a")
    );

    let port = node.url.rsplit(':').next().unwrap();
    for entry in ctx.journal.entries() {
        assert_eq!(entry.gate, Decision::Auto);
        assert_eq!(
            entry.via.as_deref(),
            Some(format!("url #1 (127.0.0.1:{port})").as_str())
        );
    }
}

#[tokio::test]
async fn a_dead_primary_fails_over_to_the_node() {
    let node = Ganache::start().await;
    let (_setup, runtime) = setup(&format!("[\"{}\", \"{}\"]", dead_url(), node.url), "");
    let mut ctx = call_ctx(&runtime, "p", Mode::Live);
    let block = call(&mut ctx, "eth_blockNumber", json!([])).await.unwrap();
    assert_eq!(block, node.rpc("eth_blockNumber", json!([])).await);
    let via = ctx.journal.entries()[0].via.clone().unwrap();
    assert!(via.starts_with("url #2 (127.0.0.1:"), "{via}");

    // A write may fail over too when the primary never took the request.
    let raw = "0xf86b808504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83";
    let sent = call(&mut ctx, "eth_sendRawTransaction", json!([raw])).await;
    // ganache refuses this foreign-chain transaction: a JSON-RPC error is an
    // answer from url #2, not an outage.
    match wit(sent) {
        WitError::Backend(m) => assert!(m.contains("JSON-RPC error"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reads_are_retried_with_backoff_and_writes_are_never_resent() {
    let flaky = Receiver::start(|request, n| {
        if n < 2 {
            Reply::status(503, "busy")
        } else {
            let id = request.json()["id"].clone();
            Reply::ok(json!({ "jsonrpc": "2.0", "id": id, "result": "0x10" }).to_string())
        }
    })
    .await;
    let (_setup, runtime) = setup(
        &format!("[\"{}\"]", flaky.url),
        "retries = 2\nbackoff = \"20ms\"",
    );
    let mut ctx = call_ctx(&runtime, "p", Mode::Live);
    let started = Instant::now();
    assert_eq!(
        call(&mut ctx, "eth_blockNumber", json!([])).await.unwrap(),
        json!("0x10")
    );
    assert_eq!(flaky.requests().len(), 3, "two failures, then the answer");
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "backoff 20 ms then 40 ms"
    );

    let always_busy = Receiver::always(Reply::status(503, "busy")).await;
    let (_setup, runtime) = setup(
        &format!("[\"{}\", \"{}\"]", always_busy.url, flaky.url),
        "retries = 3\nbackoff = \"1ms\"",
    );
    let mut ctx = call_ctx(&runtime, "p", Mode::Live);
    let before = flaky.requests().len();
    match wit(call(&mut ctx, "eth_sendRawTransaction", json!(["0x00"])).await) {
        WitError::Backend(m) => assert!(m.contains("may have arrived"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(always_busy.requests().len(), 1, "a write is sent once");
    assert_eq!(flaky.requests().len(), before, "and never to a second URL");
}

#[tokio::test]
async fn a_backend_slower_than_its_timeout_is_a_timeout() {
    // It would answer after a minute: the run gets a timeout long before.
    let slow = Receiver::always(Reply::ok("{}").after(Duration::from_secs(60))).await;
    let (_setup, runtime) = setup(
        &format!("[\"{}\"]", slow.url),
        "timeout = \"200ms\"\nretries = 1\nbackoff = \"10ms\"",
    );
    let mut ctx = call_ctx(&runtime, "p", Mode::Live);
    match wit(call(&mut ctx, "eth_blockNumber", json!([])).await) {
        WitError::Timeout(m) => assert!(m.contains("no URL answered"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(slow.requests().len(), 2, "one retry of the read");
}

#[tokio::test]
async fn an_answer_over_the_result_limit_ends_the_run() {
    let big = "x".repeat(256 << 10);
    let huge = Receiver::always(Reply::ok(
        json!({ "jsonrpc": "2.0", "id": 1, "result": big }).to_string(),
    ))
    .await;
    let (_setup, runtime) = setup(&format!("[\"{}\"]", huge.url), "");
    let mut ctx = call_ctx(&runtime, "p", Mode::Live);
    ctx.limits.result_bytes = 64 << 10;
    match call(&mut ctx, "eth_blockNumber", json!([])).await {
        Err(CapError::Trap(e)) => assert!(e.to_string().contains("result"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn secret_urls_and_headers_never_show() {
    let key = "k3y-0f-th3-n0de-pr0v1der";
    let token = "Bearer t0ken-that-must-not-leak";
    // An upstream that checks the header and then quotes it back in an
    // error, as careless servers do.
    let upstream = Receiver::start(move |request, _| {
        let auth = request.headers.get("authorization").cloned().unwrap_or_default();
        let id = request.json()["id"].clone();
        Reply::ok(
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32000, "message": format!("quota exceeded for {auth}") } })
                .to_string(),
        )
    })
    .await;
    let dead = secret_file(&format!("{}/v3/{key}", dead_url()));
    let dead = dead.path().display();
    let token_file = secret_file(token);
    let (_setup, runtime) = setup(
        &format!("[{{ file = \"{dead}\" }}, \"{}\"]", upstream.url),
        &format!(
            "headers = {{ Authorization = {{ file = \"{}\" }} }}",
            token_file.path().display()
        ),
    );
    let mut ctx = call_ctx(&runtime, "p", Mode::Live);
    let err = wit(call(&mut ctx, "eth_blockNumber", json!([])).await);
    let WitError::Backend(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("quota exceeded for ***"), "{message}");
    assert_eq!(upstream.requests()[0].headers["authorization"], token);
    let journal = serde_json::to_string(ctx.journal.entries()).unwrap();
    for text in [message.as_str(), journal.as_str()] {
        assert!(!text.contains(key), "{text}");
        assert!(!text.contains("t0ken-that"), "{text}");
    }

    // Only the dead URL: its error names it by position, not by text.
    let (_setup, runtime) = setup(&format!("[{{ file = \"{dead}\" }}]"), "retries = 0");
    let mut ctx = call_ctx(&runtime, "p", Mode::Live);
    let err = wit(call(&mut ctx, "eth_blockNumber", json!([])).await);
    let WitError::Backend(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("url #1: cannot connect"), "{message}");
    assert!(!message.contains(key), "{message}");
}

fn http_setup(url: &str) -> (Setup, Runtime) {
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"

[rpc.admin]
kind = "http"
urls = ["{url}/api/v1"]
headers = {{ Authorization = "Bearer admin-token" }}
routes = ["GET /admin/feature-flags", "POST /admin/feature-flags", "GET /health/*"]

[playbooks.p]
component = "unused.wasm"
gates = {{ default = "auto" }}
grants.rpc.admin.routes = ["GET /admin/feature-flags", "POST /admin/feature-flags"]
"#
    ));
    let runtime = setup.runtime();
    (setup, runtime)
}

fn request(method: &str, path: &str, body: &str) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        path: path.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

async fn http(ctx: &mut CallCtx, request: HttpRequest) -> Result<HttpResponse, CapError> {
    Host::http(ctx, "admin".into(), request, "test: disable credits".into()).await
}

#[tokio::test]
async fn http_endpoints_send_granted_routes_and_gate_writes() {
    let api = Receiver::always(Reply::ok(r#"{"credits": true}"#)).await;
    let (_setup, runtime) = http_setup(&api.url);

    let mut dry = call_ctx(&runtime, "p", Mode::DryRun);
    let read = http(&mut dry, request("GET", "/admin/feature-flags", ""))
        .await
        .unwrap();
    assert_eq!(read.status, 200);
    assert_eq!(read.body, br#"{"credits": true}"#);
    let write = http(
        &mut dry,
        request(
            "POST",
            "/admin/feature-flags",
            r#"{"flag": "credits", "enabled": false}"#,
        ),
    )
    .await
    .unwrap();
    assert_eq!(write.status, 0, "a dry run sends nothing");
    assert_eq!(api.requests().len(), 1);
    assert_eq!(dry.journal.entries()[1].gate, Decision::DryRun);

    let mut live = call_ctx(&runtime, "p", Mode::Live);
    let written = http(
        &mut live,
        request(
            "POST",
            "/admin/feature-flags",
            r#"{"flag": "credits", "enabled": false}"#,
        ),
    )
    .await
    .unwrap();
    assert_eq!(written.status, 200);
    let sent = &api.requests()[1];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/api/v1/admin/feature-flags");
    assert_eq!(sent.headers["authorization"], "Bearer admin-token");
    assert_eq!(sent.json(), json!({ "flag": "credits", "enabled": false }));
    assert!(live.journal.entries()[0].via.is_some());

    // Listed on the endpoint but not granted; not listed at all; a header
    // the host owns.
    assert!(matches!(
        wit(http(&mut live, request("GET", "/health/db", "")).await),
        WitError::NotGranted(_)
    ));
    assert!(matches!(
        wit(http(&mut live, request("DELETE", "/admin/feature-flags", "")).await),
        WitError::NotGranted(_)
    ));
    let mut sneaky = request("GET", "/admin/feature-flags", "");
    sneaky
        .headers
        .push(("Authorization".into(), "Bearer mine".into()));
    assert!(matches!(
        wit(http(&mut live, sneaky).await),
        WitError::Invalid(m) if m.contains("Authorization")
    ));
    assert_eq!(api.requests().len(), 2);
}
