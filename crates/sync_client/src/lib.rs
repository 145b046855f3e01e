//! csync's master side: replicates a csync store to a Cyrus 3.6 replica or to csync's
//! own `sync_server`, on demand (`-u`, `-m`, `-A`, `-s`) or continuously by following
//! the sync_log (`-r`).
//!
//! * [`conn`]: the connection (greeting, STARTTLS, SASL, COMPRESS, streaming uploads)
//! * [`deflate_pool`]: compressing uploads on several cores
//! * [`readahead`]: opening an upload's message files ahead of the connection
//! * [`sync`]: the algorithm of spec §4 (USER, mailbox-list and META syncs, the
//!   folder pass, the unchanged check, quotas, subscriptions, seen, sieve)
//! * [`repair`]: the full update of §4.6
//! * [`rolling`]: rolling replication from the sync_log (`-r`, `-R`, `-1`), the
//!   quarantine of failing users and the per-user sync lock
//! * [`config`]: imapd.conf keys, channel-prefixed
//! * [`progress`]: the progress line of long manual runs
//! * [`verify`]: `--verify`, the read-only comparison with the replica
#![forbid(unsafe_code)]

pub mod config;
pub mod conn;
pub mod deflate_pool;
pub mod metrics;
pub mod progress;
pub mod readahead;
pub mod repair;
pub mod rolling;
pub mod sync;
pub mod verify;
