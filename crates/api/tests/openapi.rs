//! The OpenAPI contract: the checked-in `docs/openapi.json` is the generated one, the API
//! serves that same document without a key, and every documented operation is served while
//! every other method on a documented path is not.
//!
//! Refresh the checked-in copy with `UPDATE_OPENAPI=1 cargo test -p clipstash-api openapi`.

use std::path::PathBuf;

use clipstash_api::openapi::{OPENAPI_PATH, document};
use clipstash_api::openapi_page::DOCS_PATH;
use clipstash_domain::{ErrorCode, JobStatus};
use clipstash_testkit::{TestDb, TestQueue, settings as test_settings};
use serde_json::Value;
use strum::VariantArray;

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn generated() -> Value {
    serde_json::from_str(document()).unwrap()
}

#[test]
fn openapi_checked_in_copy_is_current() {
    let path = checked_in_path();
    let fresh = document();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, fresh).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == fresh,
        "docs/openapi.json is stale: it is not the document the code generates.\n\
         Refresh it with `UPDATE_OPENAPI=1 cargo test -p clipstash-api openapi` and commit it."
    );
}

#[test]
fn openapi_is_3_1_with_every_error_code_and_the_bearer_scheme() {
    let doc = generated();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = &doc["components"]["schemas"];
    let codes: Vec<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, all);
    let statuses: Vec<&str> = schemas["JobStatus"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: Vec<&str> = JobStatus::VARIANTS.iter().map(|s| s.as_str()).collect();
    assert_eq!(statuses, all);
    assert_eq!(
        schemas["ErrorDetail"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Keyed routes carry the scheme and the middleware's refusals; the probes and this
    // document do not.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let keyed = clipstash_api::openapi::needs_key(path);
            assert_eq!(op.get("security").is_some(), keyed, "{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            if keyed {
                assert!(
                    responses["401"]["headers"]
                        .get("WWW-Authenticate")
                        .is_some(),
                    "{method} {path}"
                );
                let limited = responses["429"]["headers"].as_object().unwrap();
                for h in ["Retry-After", "RateLimit", "RateLimit-Policy"] {
                    assert!(limited.contains_key(h), "{method} {path}: {h}");
                }
                assert!(responses.contains_key("503"), "{method} {path}");
            }
        }
    }
}

type Api = test_settings::RunningApi;

async fn start(db: &TestDb, queue: &TestQueue, auth_required: bool) -> Api {
    let storage_dir =
        std::env::temp_dir().join(format!("cs-openapi-{}", uuid::Uuid::new_v4().simple()));
    let mut s = test_settings::api(test_settings::common(db, queue, &storage_dir));
    if auth_required {
        s.access = test_settings::access();
    }
    Api::start(s, storage_dir).await
}

#[tokio::test]
async fn openapi_is_served_without_a_key_and_equals_the_generated_document() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let api = start(&db, &queue, true).await;
    let r = reqwest::get(format!("{}{OPENAPI_PATH}", api.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(r.text().await.unwrap(), document());
    // Other methods on it are not served: 405 with `Allow: GET`, like every resource.
    let r = reqwest::Client::new()
        .post(format!("{}{OPENAPI_PATH}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    // Its human-readable page too, with the auth on.
    let r = reqwest::get(format!("{}{DOCS_PATH}", api.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("<code>/v1/downloads/{id}</code>"), "{html}");
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Whether a response says that no route serves this method and path: a 405, or the 404 of
/// the fallback (`no such route`) or of actix's own resource default (empty body).
fn unserved(status: u16, body: &Value) -> bool {
    status == 405
        || (status == 404
            && matches!(
                body["error"]["message"].as_str(),
                Some("no such route") | None
            ))
}

#[tokio::test]
async fn openapi_documents_every_served_operation_and_only_those() {
    let (db, queue) = (TestDb::new().await, TestQueue::new());
    let api = start(&db, &queue, false).await;
    let doc = generated();
    let paths = doc["paths"].as_object().unwrap();
    let client = reqwest::Client::new();
    let job = "018f0000-0000-7000-8000-000000000000";
    let mut operations = 0;
    for (path, item) in paths {
        let url = format!("{}{}", api.base, path.replace("{id}", job));
        for method in METHODS {
            let documented = item.get(method.to_ascii_lowercase()).is_some();
            let mut req = client.request(method.parse().unwrap(), &url);
            if method == "POST" {
                req = req.json(&serde_json::json!({"url": "https://a.example/v.mp4"}));
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if documented {
                operations += 1;
                assert!(
                    !unserved(status, &body),
                    "{method} {path} is documented but not served: {status} {text}"
                );
            } else {
                assert!(
                    unserved(status, &body),
                    "{method} {path} is served ({status} {text}) but not documented"
                );
            }
        }
    }
    // POST/GET /v1/downloads, GET/DELETE /v1/downloads/{id}, GET .../events, GET .../file,
    // GET /v1/storage, GET /v1/videos/info, /healthz, /readyz, /v1/openapi.json, /v1/docs.
    assert_eq!(operations, 12, "{:?}", paths.keys().collect::<Vec<_>>());
    // A path the document does not list is not served either.
    let r = client
        .get(format!("{}/v1/no-such-route", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
