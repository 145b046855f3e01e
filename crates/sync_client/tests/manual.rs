//! `man/sync_client.8` lints clean and documents every option of `--help`.

#[path = "../../../tests/support/manpage.rs"]
mod manpage;

#[test]
fn manual_page_documents_every_option() {
    manpage::check(env!("CARGO_BIN_EXE_sync_client"), "sync_client.8");
}
