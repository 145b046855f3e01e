//! How the replica tests turn a decoded command line into the reply the session
//! would write.

use csync_protocol::command::Command;
use csync_protocol::decode::Decoder;
use csync_protocol::response::SyncStatus;
use csync_sync_server::replica::{Executed, Replica};

/// Parses the line `decoder` completed, executes it and returns the reply lines.
pub fn execute_line(replica: &mut Replica, decoder: &Decoder) -> String {
    let command = match Command::parse(decoder.line().unwrap()) {
        Ok(c) => c,
        Err(e) => return format!("{}\r\n", e.reply),
    };
    let mut out = Vec::new();
    let status = match replica.execute(command, &mut out) {
        Executed::Status(Ok(())) => SyncStatus::Ok.line().to_owned(),
        Executed::Status(Err(f)) => f.status.line().to_owned(),
        Executed::Line(l) => l.to_owned(),
        Executed::NotMine => "not a replica command".to_owned(),
    };
    format!("{}{status}\r\n", String::from_utf8_lossy(&out))
}
