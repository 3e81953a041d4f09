//! Built-in transports.

mod local;
pub mod output;

pub use local::LocalTransport;
