//! Wharf's access control, the ACR way: identities (the admin user, repository-scoped tokens
//! with their scope maps, ACR's five system scope maps, anonymous pull, the management
//! credential), scope evaluation, the token server's logic (JWT access and refresh tokens,
//! grant = requested ∩ allowed), and credential checks with a cache and a failed-login limiter.
//!
//! It knows no HTTP types: `wharf-http` parses headers and routes and asks this crate who the
//! caller is and what they may do. It stores identities only through the store's narrow
//! `IdentityStore` handle and never touches registry or webhook state.

pub mod jwt;
pub mod model;
pub mod scope;
mod secret;
mod service;

pub use scope::{RepoAction, ResourceScope};
pub use service::{
    Auth, AuthConfig, AuthError, Credentials, Denied, InitialCredentials, Need, Principal,
};
