//! The `/metrics` route for actix-web apps (feature `actix`).

use actix_web::{HttpResponse, web};

use crate::Exporter;

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Adds `GET /metrics` rendering `exporter` to an app or scope.
pub fn configure(exporter: Exporter) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg| {
        let exporter = exporter.clone();
        cfg.route(
            "/metrics",
            web::get().to(move || {
                let body = exporter.render();
                async move { HttpResponse::Ok().content_type(CONTENT_TYPE).body(body) }
            }),
        );
    }
}
