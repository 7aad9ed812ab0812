//! The announce policies that decide from the request alone whether a client may announce: which
//! clients (peer_id prefixes) and which tokens (JWT). Each module owns its config section, its
//! reloadable state and its refusal messages; the pipeline runs them in its fixed order.

pub mod client_list;
pub mod jwt;
