//! `GET /v1/docs`: the OpenAPI contract as one self-contained HTML page (no scripts, no
//! assets fetched from anywhere), rendered from the same document `/v1/openapi.json`
//! serves, so the page cannot drift from the contract either.

use std::fmt::Write;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use serde_json::Value;

use crate::openapi;

/// The path the page is served at.
pub const DOCS_PATH: &str = "/v1/docs";

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#222}\
code,pre{font-family:ui-monospace,monospace;font-size:13px}\
h2{border-bottom:1px solid #ddd;margin-top:2.5rem}\
.op{border:1px solid #ddd;border-radius:6px;padding:.2rem 1rem;margin:1rem 0}\
.m{display:inline-block;min-width:4rem;font-weight:bold;text-transform:uppercase}\
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}\
nav a{margin-right:1rem}";

/// `GET /v1/docs`: the human-readable contract; no key needed.
#[utoipa::path(
    get,
    path = "/v1/docs",
    tag = "meta",
    operation_id = "docs",
    responses((status = 200, description = "This contract as a self-contained HTML page (no scripts, no external assets).", content_type = "text/html")),
)]
pub async fn docs_page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::html())
        .body(page())
}

/// The page, rendered once per process.
pub fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let doc: Value =
            serde_json::from_str(openapi::document()).expect("the OpenAPI document is JSON");
        render(&doc)
    })
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A short type description of a schema: `string (uuid)`, `array of JobView`, a link to a
/// named schema, or the enum's values.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(name));
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(combinator).and_then(Value::as_array) {
            let parts: Vec<String> = list.iter().map(type_of).collect();
            return parts.join(" or ");
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(v.as_str().unwrap_or(&v.to_string()))))
            .collect();
        return format!("one of {}", values.join(", "));
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => String::new(),
    };
    let ty = if ty.starts_with("array") {
        let items = schema.get("items").map(type_of).unwrap_or_default();
        ty.replacen("array", &format!("array of {items}"), 1)
    } else {
        esc(&ty)
    };
    match schema.get("format").and_then(Value::as_str) {
        Some(f) => format!("{ty} ({})", esc(f)),
        None => ty,
    }
}

fn render(doc: &Value) -> String {
    let info = &doc["info"];
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><h1>{title} <small>{version}</small></h1><p>{desc}</p>\
         <p>Machine-readable: <a href=\"{json}\">{json}</a>.</p><nav>",
        title = esc(text(info, "title")),
        version = esc(text(info, "version")),
        desc = esc(text(info, "description")),
        json = openapi::OPENAPI_PATH,
    );
    let empty = serde_json::Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    let schemas = doc["components"]["schemas"].as_object().unwrap_or(&empty);
    h.push_str("<a href=\"#operations\">Operations</a><a href=\"#schemas\">Schemas</a></nav>");

    h.push_str("<h2 id=\"operations\">Operations</h2>");
    for (path, item) in paths {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            operation(&mut h, method, path, op);
        }
    }

    h.push_str("<h2 id=\"schemas\">Schemas</h2>");
    for (name, schema) in schemas {
        let _ = write!(
            h,
            "<h3 id=\"schema-{n}\">{n}</h3><p>{d}</p>",
            n = esc(name),
            d = esc(text(schema, "description"))
        );
        match schema.get("properties").and_then(Value::as_object) {
            Some(props) => {
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                h.push_str("<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>");
                for (field, s) in props {
                    let _ = write!(
                        h,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(field),
                        type_of(s),
                        if required.contains(&field.as_str()) {
                            "yes"
                        } else {
                            ""
                        },
                        esc(text(s, "description"))
                    );
                }
                h.push_str("</table>");
            }
            None => {
                let _ = write!(h, "<p>{}</p>", type_of(schema));
            }
        }
    }
    h.push_str("</body></html>\n");
    h
}

fn operation(h: &mut String, method: &str, path: &str, op: &Value) {
    let keyed = op.get("security").is_some();
    let _ = write!(
        h,
        "<div class=\"op\" id=\"{id}\"><h3><span class=\"m\">{method}</span> <code>{path}</code></h3>\
         <p><b>{summary}</b> {auth}</p><p>{desc}</p>",
        id = esc(text(op, "operationId")),
        path = esc(path),
        summary = esc(text(op, "summary")),
        auth = if keyed { "(needs a key)" } else { "(no key)" },
        desc = esc(text(op, "description")),
    );
    if let Some(params) = op.get("parameters").and_then(Value::as_array) {
        h.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th>description</th></tr>");
        for p in params {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(text(p, "name")),
                esc(text(p, "in")),
                p.get("schema").map(type_of).unwrap_or_default(),
                if p.get("required") == Some(&Value::Bool(true)) {
                    "yes"
                } else {
                    ""
                },
                esc(text(p, "description")),
            );
        }
        h.push_str("</table>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        for (media, body) in content {
            let _ = write!(
                h,
                "<p>Body (<code>{}</code>): {}</p>",
                esc(media),
                body.get("schema").map(type_of).unwrap_or_default()
            );
        }
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        h.push_str("<table><tr><th>status</th><th>description</th><th>body</th></tr>");
        for (status, r) in responses {
            let body: Vec<String> = r
                .get("content")
                .and_then(Value::as_object)
                .map(|c| {
                    c.iter()
                        .map(|(media, v)| {
                            let ty = v.get("schema").map(type_of).unwrap_or_default();
                            format!("<code>{}</code> {ty}", esc(media))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(status),
                esc(text(r, "description")),
                body.join("<br>")
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::from_str(openapi::document()).unwrap()
    }

    #[test]
    fn every_operation_and_schema_of_the_contract_is_on_the_page() {
        let doc = doc();
        let page = page();
        let mut ops = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    ops += 1;
                    let id = text(op, "operationId");
                    assert!(
                        page.contains(&format!("id=\"{id}\"")),
                        "{method} {path} ({id}) missing from the page"
                    );
                }
            }
            assert!(
                page.contains(&format!("<code>{}</code>", esc(path))),
                "{path}"
            );
        }
        assert!(
            ops >= 8,
            "only {ops} operations found: is the document read at all?"
        );
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            assert!(page.contains(&format!("id=\"schema-{name}\"")), "{name}");
        }
        // Every error code is listed (through the ErrorCode schema's enum).
        for code in <clipstash_domain::ErrorCode as strum::VariantArray>::VARIANTS {
            assert!(
                page.contains(&format!("<code>{}</code>", code.as_str())),
                "{code}"
            );
        }
    }

    #[test]
    fn the_page_loads_nothing_from_anywhere() {
        let page = page();
        for needle in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!page.contains(needle), "the page contains {needle}");
        }
    }

    #[test]
    fn text_from_the_contract_is_escaped() {
        assert_eq!(esc("<b a=\"1\">&'"), "&lt;b a=&quot;1&quot;&gt;&amp;&#39;");
        let html = render(&serde_json::json!({
            "info": {"title": "<script>x</script>"},
            "paths": {}, "components": {"schemas": {}}
        }));
        assert!(!html.contains("<script>"));
    }
}
