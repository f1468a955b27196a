//! Actions: what dropguard does about the data at risk and about incidents —
//! preservation (on demand, and automatically before `migrate`), restore, and
//! alerts. Actions never import sources or detection.

pub mod alerts;
pub mod autopreserve;
pub mod preserve;
pub mod restore;
pub mod workflow;
