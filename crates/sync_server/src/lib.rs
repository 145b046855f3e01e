//! csync's replica daemon: accepts connections from a Cyrus 3.6 (or csync) master,
//! speaks the csync protocol and applies what it receives to the mailstore, durably
//! before it answers `OK`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod conn;
mod inflating;
pub mod metrics;
pub mod replica;
pub mod server;
pub mod session;
pub mod spool;
pub mod staging;
