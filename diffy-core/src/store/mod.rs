//! Built-in stores.

mod fs;

pub use fs::FsStore;
