//! `/healthz` (the process answers) and `/readyz` (its dependencies answer too).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use clipstash_domain::ErrorCode;

use crate::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready when Postgres and Redis both answer within a second.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let timeout = std::time::Duration::from_secs(1);
    let pg = tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&state.pool));
    let redis = tokio::time::timeout(timeout, state.queue.ping());
    let (pg, redis) = tokio::join!(pg, redis);
    let pg_ok = matches!(pg, Ok(Ok(_)));
    let redis_ok = matches!(redis, Ok(Ok(_)));
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let checks = serde_json::json!({ "postgres": word(pg_ok), "redis": word(redis_ok) });
    if pg_ok && redis_ok {
        return HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "checks": checks }));
    }
    let failed: Vec<&str> = [("postgres", pg_ok), ("redis", redis_ok)]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    let code = ErrorCode::NotReady;
    code.record();
    HttpResponse::build(StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)).json(serde_json::json!({
        "error": { "code": code.as_str(), "message": format!("unavailable: {}", failed.join(", ")) },
        "checks": checks,
    }))
}
