//! clipstash HTTP API: validates download requests, records jobs in Postgres and enqueues
//! them in Redis. [`Application::build`] binds first so tests can use port 0.
//!
//! - [`settings`]: the command line; [`startup`]: connect, bind, serve, drain;
//! - [`routes`]: one file per resource, wired in `routes/mod.rs`;
//! - [`error`]: the one error type and its JSON body; [`middleware`]: HTTP metrics;
//! - [`openapi`]: the OpenAPI 3.1 contract generated from the handlers (`docs/openapi.json`);
//! - [`auth`]: API keys, the `/v1` auth middleware, per-key limits, `keys` command.

pub mod auth;
pub mod error;
pub mod events;
pub mod middleware;
pub mod openapi;
pub mod openapi_page;
pub mod routes;
pub mod settings;
pub mod startup;

pub use settings::{Cli, Command, Settings};
pub use startup::{AppState, Application};

/// Largest accepted request body: room for a submit with 64 KiB of cookies, JSON-escaped.
pub const MAX_BODY_BYTES: usize = 96 * 1024;
