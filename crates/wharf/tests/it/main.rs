//! Wharf's integration tests: one test binary (one link of the whole server instead of one
//! per file, which cut CI's build and clippy time), one module per area. Run one area with
//! its module path as the filter, e.g. `cargo test --test it -- oci::`.

mod common;

mod acr;
mod arm;
mod auth;
mod authcli;
mod cli;
mod faults;
mod gc;
mod locks;
mod nodes;
mod object_faults;
mod oci;
mod quarantine;
mod retention;
mod safe_webhooks;
mod serve;
mod tls;
mod webhooks;
