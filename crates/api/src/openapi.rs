//! The API's OpenAPI 3.1 contract, generated from the handlers' `#[utoipa::path]` annotations
//! and the response types. Served at `GET /v1/openapi.json` (no key needed) and checked in as
//! `docs/openapi.json`; `UPDATE_OPENAPI=1 cargo test -p clipstash-api openapi` refreshes the
//! copy. See `docs/API.md`.

use std::borrow::Cow;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Content, OpenApi as OpenApiDoc, Ref, RefOr, ResponseBuilder, schema::SchemaFormat,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{downloads, events, files, health, storage, videos};

/// The path the document is served at.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// Whether a documented path sits behind the `/v1` key check: everything under `/v1` but the
/// contract itself and its HTML page.
pub fn needs_key(path: &str) -> bool {
    path.starts_with("/v1/") && path != OPENAPI_PATH && path != crate::openapi_page::DOCS_PATH
}

pub use clipstash_db::view::{
    ErrorCodeSchema, JobStatusSchema, RequestedSourceSchema, SchemaOf, VideoSourceSchema,
};

/// `cookies` of a submit: cookies.txt text or a `{name: value}` object.
pub struct CookiesSchema;

impl PartialSchema for CookiesSchema {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .max_length(Some(65536))
                    .description(Some("Netscape `cookies.txt` text: 7 tab-separated fields per cookie line.")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Object))
                    .additional_properties(Some(
                        ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
                    ))
                    .description(Some("Cookie name: value, for the URL's domain (without `www.`) and its subdomains.")),
            )
            .description(Some("Cookies for the site, sent to it by yt-dlp. Secret: encrypted at rest, never returned."))
            .into()
    }
}

impl ToSchema for CookiesSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Cookies")
    }
}

/// Stored media: any bytes, in whatever type the job recorded.
pub struct Media;

impl PartialSchema for Media {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .content_media_type("application/octet-stream")
            .description(Some(
                "The stored bytes, sent with the job's `content_type` (`application/octet-stream` if unknown).",
            ))
            .into()
    }
}

impl ToSchema for Media {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Media")
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clipstash API",
        description = "Submit download jobs, follow them and fetch the stored media. Every `/v1` route but this document needs `Authorization: Bearer <key>` (see docs/ACCESS.md); every error has the body `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        downloads::create_download,
        downloads::list_downloads,
        downloads::get_download,
        downloads::delete_download,
        events::job_events,
        files::download_file,
        storage::storage,
        videos::video_info,
        health::healthz,
        health::readyz,
        openapi_json,
        crate::openapi_page::docs_page,
    ),
    components(schemas(
        downloads::JobView,
        downloads::JobErrorView,
        downloads::ProgressView,
        downloads::JobPage,
        downloads::CreateDownload,
        storage::StorageView,
        events::SseEvent,
        clipstash_sources::ytdlp::VideoInfo,
        clipstash_sources::ytdlp::FormatInfo,
        storage::ProviderView,
        health::Health,
        health::Ready,
        health::NotReady,
        health::Checks,
        ErrorBody,
        ErrorDetail,
        ErrorCodeSchema,
        Media,
        CookiesSchema,
        JobStatusSchema,
        VideoSourceSchema,
        RequestedSourceSchema,
    )),
    modifiers(&V1Access),
    tags(
        (name = "downloads", description = "Download jobs and their files"),
        (name = "storage", description = "Storage providers and their usage"),
        (name = "videos", description = "What yt-dlp knows about a video"),
        (name = "health", description = "Liveness and readiness (no key)"),
        (name = "meta", description = "This document (no key)"),
    )
)]
pub struct ApiDoc;

/// Adds what the `/v1` auth middleware answers on every keyed route (the bearer scheme, 401
/// with `WWW-Authenticate`, 429 with `Retry-After` and `RateLimit`) and the dependency
/// failures every route may meet (500, 503), once instead of on each handler.
struct V1Access;

const BEARER: &str = "bearer";

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
    )
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(String::schema()))
        .description(Some(description))
        .build()
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Integer))
                .format(Some(SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Int32,
                )))
                .minimum(Some(0)),
        ))
        .description(Some(description))
        .build()
}

impl Modify for V1Access {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `clipstash-api keys create`: `Authorization: Bearer <key>`.",
                    ))
                    .build(),
            ),
        );
        let unauthenticated = error_response(
            "No key (`unauthenticated`), or an unknown or revoked one (`invalid_api_key`).",
        )
        .header(
            "WWW-Authenticate",
            string_header(
                "`Bearer realm=\"clipstash\"`, with `error=\"invalid_token\"` for a bad key.",
            ),
        )
        .build();
        let rate_limited = error_response(
            "The key is over its request rate (`rate_limited`), on submit at its cap of active jobs (`too_many_active_jobs`), or on an event stream at its cap of open streams (`too_many_streams`).",
        )
        .header("Retry-After", integer_header("Seconds to wait before retrying."))
        .header(
            "RateLimit-Policy",
            string_header("The limit that refused the request, e.g. `\"default\";q=120;w=60` (`\"active-jobs\";q=20` for the active-jobs cap, `\"streams\";q=10` for the stream cap)."),
        )
        .header(
            "RateLimit",
            string_header("What is left of it, e.g. `\"default\";r=0;t=7`."),
        )
        .build();
        let internal = error_response("`internal_error`: a fault of ours (logged).").build();
        let unavailable = error_response(
            "`database_unavailable`, `queue_unavailable` or `storage_unavailable`: a backing service did not answer; retry later.",
        )
        .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            let keyed = needs_key(path);
            let ops: [&mut Option<Operation>; 4] = [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
            ];
            for op in ops.into_iter().flatten() {
                let responses = &mut op.responses.responses;
                if keyed {
                    op.security =
                        Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                    responses.insert("401".into(), unauthenticated.clone().into());
                    responses.insert("429".into(), rate_limited.clone().into());
                    responses.insert("500".into(), internal.clone().into());
                    responses
                        .entry("503".into())
                        .or_insert_with(|| unavailable.clone().into());
                }
            }
        }
    }
}

/// The document as pretty-printed JSON with a trailing newline: what is served and checked in.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut s = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises");
        s.push('\n');
        s
    })
}

/// `GET /v1/openapi.json`: this contract; no key needed.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(document())
}
