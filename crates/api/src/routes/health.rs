//! `/healthz` (the process answers) and `/readyz` (its dependencies answer too).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use clipstash_domain::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ErrorDetail;

/// The body of `/healthz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`
    pub status: String,
}

/// Each dependency's state: `ok` or `unavailable`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Checks {
    pub postgres: String,
    pub redis: String,
}

/// The body of a ready `/readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// `ready`
    pub status: String,
    pub checks: Checks,
}

/// The body of a `/readyz` that is not ready: the common error (`not_ready`) and the checks.
#[derive(Serialize, ToSchema)]
#[schema(as = NotReady)]
pub struct NotReady<'a> {
    pub error: ErrorDetail<'a>,
    pub checks: Checks,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process answers.", body = Health)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

/// Ready when Postgres and Redis both answer within a second.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Postgres and Redis answer.", body = Ready),
        (status = 503, description = "`not_ready`: one of them did not answer within a second.", body = NotReady),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let timeout = std::time::Duration::from_secs(1);
    let pg = tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&state.pool));
    let redis = tokio::time::timeout(timeout, state.queue.ping());
    let (pg, redis) = tokio::join!(pg, redis);
    let pg_ok = matches!(pg, Ok(Ok(_)));
    let redis_ok = matches!(redis, Ok(Ok(_)));
    let word = |ok: bool| if ok { "ok" } else { "unavailable" }.to_string();
    let checks = Checks {
        postgres: word(pg_ok),
        redis: word(redis_ok),
    };
    if pg_ok && redis_ok {
        return HttpResponse::Ok().json(Ready {
            status: "ready".into(),
            checks,
        });
    }
    let failed: Vec<&str> = [("postgres", pg_ok), ("redis", redis_ok)]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    let code = ErrorCode::NotReady;
    code.record();
    let message = format!("unavailable: {}", failed.join(", "));
    HttpResponse::build(
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
    )
    .json(NotReady {
        error: ErrorDetail {
            code: code.as_str(),
            message: &message,
        },
        checks,
    })
}
