//! Built-in transports.

mod local;
pub(crate) mod output;
pub(crate) mod spawn;

pub use local::LocalTransport;
