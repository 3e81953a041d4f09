//! Built-in transports.

mod local;
pub mod output;
pub mod spawn;

pub use local::LocalTransport;
