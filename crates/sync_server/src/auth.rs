//! Builds the session's authenticator from the server's settings (spec §1.6): the
//! csync password file and/or saslauthd, `allowplaintext`, `sasl_mech_list`,
//! `admins`. The password file is read for each connection, so `csyncadm passwd`
//! takes effect without a restart, as sasldb does for Cyrus.

use std::sync::Arc;

use anyhow::Context;
use csync_auth::passwd::PasswordFile;
use csync_auth::saslauthd::{DEFAULT_SASLAUTHD_PATH, Saslauthd};
use csync_auth::{AuthSettings, Authenticator, PasswordCheck};

use crate::config::ServerConfig;

pub use csync_auth::is_admin_session;

/// The authenticator for a new session.
pub fn authenticator(config: &ServerConfig) -> anyhow::Result<Authenticator> {
    let mut settings = AuthSettings::new(config.servername.clone());
    settings.allow_plaintext = config.allowplaintext;
    settings.mech_list = config.mech_list.clone();
    settings.admins = config.admins.clone();
    if config.pwcheck_saslauthd {
        let path = config
            .saslauthd_path
            .clone()
            .unwrap_or_else(|| DEFAULT_SASLAUTHD_PATH.into());
        settings
            .password_checks
            .push(PasswordCheck::Saslauthd(Saslauthd::new(path)));
    }
    if !config.pwcheck_saslauthd || config.password_file.exists() {
        let file = PasswordFile::load_or_new(&config.password_file).with_context(|| {
            format!(
                "password file {} (create users with `csyncadm passwd`)",
                config.password_file.display()
            )
        })?;
        settings
            .password_checks
            .push(PasswordCheck::File(Arc::new(file)));
    }
    Authenticator::new(settings).context("authentication settings")
}
