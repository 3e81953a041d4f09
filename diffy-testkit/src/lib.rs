//! # diffy-testkit
//!
//! What Diffy's tests share: the conformance suites every plugin runs
//! ([`conformance`]), and a fleet simulator with ground truth ([`fleet`]).
#![deny(missing_docs)]

pub mod conformance;
pub mod fleet;
#[cfg(feature = "moto")]
pub mod moto;
#[cfg(feature = "ssm-endpoint")]
pub mod ssm_endpoint;
