//! Actions: what dropguard does about the data at risk and about incidents —
//! preservation now; alerts and the restore workflow later. Actions never import
//! sources or detection.

pub mod preserve;
pub mod restore;
