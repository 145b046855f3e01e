//! csync's replica daemon (partial build while auth lands).
#![forbid(unsafe_code)]
pub mod replica;
pub mod staging;
