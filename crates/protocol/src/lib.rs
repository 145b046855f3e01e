//! csync-protocol: the Cyrus IMAPd 3.6 replication protocol ("csync") as bytes in and
//! bytes out.
//!
//! This crate is sans-IO: no sockets, no files, no runtime. It turns received bytes
//! into typed commands and responses and typed values back into the exact bytes Cyrus
//! writes, so it can be tested and fuzzed from byte strings and shared by
//! `sync_server`, `sync_client` and the tests. Section numbers (§) refer to
//! `csync-protocol.md`, the protocol reference the project is built from.
//!
//! * [`value`]: the dlist model and typed reads (§2.1, §2.6)
//! * [`encode`]: the writer (§2.3, §2.5)
//! * [`decode`]: the incremental reader, file literals streamed to a sink (§2.4, §2.5)
//! * [`command`], [`mailbox`], [`metadata`], [`response`]: typed session commands,
//!   GET/APPLY/RESTORE subcommands, the MAILBOX description, quotas/seen/sieve/
//!   annotations, and replies (§1, §3)
//! * [`crc`]: SYNC_CRC and SYNC_CRC_ANNOT (§5)
//! * [`compress`]: COMPRESS DEFLATE framing (§1.7)
//! * [`sasl`]: the AUTHENTICATE exchange framing (§1.6)
//! * [`transcript`]: reads captured Cyrus sessions back into bytes (tests, replay tools)
#![forbid(unsafe_code)]

pub mod command;
pub mod compress;
pub mod crc;
pub mod decode;
pub mod encode;
mod guid;
pub mod mailbox;
pub mod metadata;
pub mod response;
pub mod sasl;
pub mod transcript;
pub mod value;

pub use command::{ApplyCommand, Command, CommandError, GetCommand, RestoreCommand};
pub use decode::{
    Body, CollectFiles, DecodeError, Decoder, DiscardFiles, Feed, FileHeader, FileSink, Limits,
    Line, Mode, RecordBatch, SinkError,
};
pub use encode::{Encoder, LiteralStyle};
pub use guid::Guid;
pub use mailbox::{Annotation, FieldError, MailboxState, Record, Required, SystemFlags};
pub use metadata::{MailboxAnnotation, Quota, SeenRecord, SieveEntry, SieveScript};
pub use response::{Completion, DataItem, Greeting, Response, SyncStatus};
pub use value::{Dlist, Item, Kind, TypeError, Value};
