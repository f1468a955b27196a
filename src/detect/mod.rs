//! Detection: pure and synchronous. Turns events into findings (which dropped
//! object an error names) and, with deploys, into incidents. Never reads a
//! source or performs an action itself.

pub mod correlate;
pub mod errors;
pub mod incident;
pub mod mask;
pub mod signatures;

pub use correlate::{Correlated, Detector, Outcome, Settings};
pub use signatures::{Missing, Signatures};
