//! Route wiring: one file per resource, and the fallbacks.

pub mod downloads;
pub mod fallback;
pub mod files;
pub mod health;
pub mod storage;

use actix_web::web;

/// The versioned API routes plus health checks; each resource answers 405 in the common
/// JSON format for methods it does not serve.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/downloads")
            .route(web::post().to(downloads::create_download))
            .route(web::get().to(downloads::list_downloads))
            .default_service(web::to(fallback::method_not_allowed)),
    )
    .service(
        web::resource("/v1/downloads/{id}")
            .route(web::get().to(downloads::get_download))
            .route(web::delete().to(downloads::delete_download))
            .default_service(web::to(fallback::method_not_allowed)),
    )
    .service(
        web::resource("/v1/downloads/{id}/file")
            .route(web::get().to(files::download_file))
            .default_service(web::to(fallback::method_not_allowed)),
    )
    .service(
        web::resource("/v1/storage")
            .route(web::get().to(storage::storage))
            .default_service(web::to(fallback::method_not_allowed)),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz));
}
