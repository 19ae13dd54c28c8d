//! Route wiring: one file per resource, and the fallbacks.

pub mod downloads;
pub mod events;
pub mod fallback;
pub mod files;
pub mod health;
pub mod storage;
pub mod videos;

use actix_web::web;

use crate::{auth, openapi, openapi_page};

/// The versioned API routes (behind [`auth::authenticate`]) plus health checks; each resource
/// answers 405 with `Allow` in the common JSON format for methods it does not serve.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // The contract and its HTML page need no key: registered before the /v1 scope, which would match it first.
    cfg.service(get_only(openapi::OPENAPI_PATH, openapi::openapi_json));
    cfg.service(get_only(openapi_page::DOCS_PATH, openapi_page::docs_page));
    // Everything else under /v1 (unmatched paths included) passes the auth middleware first.
    cfg.service(
        web::scope("/v1")
            .wrap(actix_web::middleware::from_fn(auth::authenticate))
            .service(
                web::resource("/downloads")
                    .route(web::post().to(downloads::create_download))
                    .route(web::get().to(downloads::list_downloads))
                    .default_service(web::to(fallback::method_not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/downloads/{id}")
                    .route(web::get().to(downloads::get_download))
                    .route(web::delete().to(downloads::delete_download))
                    .default_service(web::to(fallback::method_not_allowed("GET, DELETE"))),
            )
            .service(
                web::resource("/downloads/{id}/events")
                    .route(web::get().to(events::job_events))
                    .default_service(web::to(fallback::method_not_allowed("GET"))),
            )
            .service(
                web::resource("/downloads/{id}/file")
                    .route(web::get().to(files::download_file))
                    .default_service(web::to(fallback::method_not_allowed("GET"))),
            )
            .service(
                web::resource("/videos/info")
                    .route(web::get().to(videos::video_info))
                    .default_service(web::to(fallback::method_not_allowed("GET"))),
            )
            .service(
                web::resource("/storage")
                    .route(web::get().to(storage::storage))
                    .default_service(web::to(fallback::method_not_allowed("GET"))),
            )
            .default_service(web::to(fallback::unmatched)),
    )
    .service(get_only("/healthz", health::healthz))
    .service(get_only("/readyz", health::readyz));
}

/// A resource that serves GET only and answers every other method 405 with `Allow: GET`.
fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(web::to(fallback::method_not_allowed("GET")))
}
