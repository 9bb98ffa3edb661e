//! The domain: identifiers, validated client input, thread settings and the context rebuild.
//! Nothing here does I/O; the HTTP layer parses into these types and the storage layer
//! persists them.

pub mod context;
pub mod export;
pub mod ids;
pub mod json;
pub mod message;
pub mod raw;
pub mod reasoning;
pub mod records;
pub mod thread;
pub mod turn;
