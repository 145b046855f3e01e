//! csyncadm: the administrator's tool for a csync store. It plays the parts of
//! Cyrus's `deliver`, `cyradm`, `mbexamine` and `reconstruct`, and changes the store
//! only through the mailstore API, so every change is one durable transaction that
//! writes its sync_log record for the replica.
//!
//! Exit statuses follow sysexits.h (see `failure::status` and the manual page).
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod conf;
mod dump;
mod export;
mod failure;
mod lineends;
mod show;
mod timefmt;
mod uidset;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version succeed; any other command-line error is EX_USAGE
            // (clap's own status would be 2).
            let _ = e.print();
            return ExitCode::from(if e.exit_code() == 0 {
                0
            } else {
                failure::status::USAGE
            });
        }
    };
    let conf = match conf::Conf::load(&cli.config) {
        Ok(conf) => conf,
        Err(e) => return ExitCode::from(failure::report(&e, None)),
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let result = commands::run(&conf, cli.command, &mut out);
    // Whatever was printed before a failure goes out before the error message.
    let flushed = out.flush();
    let code = match result {
        Ok(code) => match flushed {
            Ok(()) => code,
            Err(e) => failure::report(&e.into(), Some(&conf.store)),
        },
        Err(e) => failure::report(&e, Some(&conf.store)),
    };
    ExitCode::from(code)
}
