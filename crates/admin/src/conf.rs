//! Reading imapd.conf and opening the store it describes.

use std::path::Path;

use anyhow::Context;
use csync_config::Config;
use csync_mailstore::{Store, StoreConfig};

use crate::failure::doing;

/// The configuration csyncadm runs with: the whole imapd.conf (for settings beyond
/// the store's, such as the sync_log channels) and the store's part of it.
#[derive(Debug)]
pub struct Conf {
    pub imapd: Config,
    pub store: StoreConfig,
}

impl Conf {
    pub fn load(path: &Path) -> anyhow::Result<Conf> {
        let shown = path.display().to_string();
        let imapd = Config::from_file(path)
            .with_context(|| doing("cannot read the configuration", &shown))?;
        let store = StoreConfig::from_imapd(&imapd)
            .with_context(|| doing("cannot use the configuration", &shown))?;
        Ok(Conf { imapd, store })
    }
}

/// Opens the store for a command.
///
/// This is where the sync_log writer is to be attached (the synclog crate's writer
/// for `conf.imapd`'s `sync_log` / `sync_log_channels`, through
/// `Store::set_changelog`), so that every change csyncadm makes is logged for the
/// replica. Until then changes are committed without sync_log records and a replica
/// learns of them on the next full sync (`sync_client -A`).
pub fn open_store(conf: &Conf) -> anyhow::Result<Store> {
    let store = Store::open(conf.store.clone()).with_context(|| {
        doing(
            "cannot open the store",
            &conf.store.configdirectory.display().to_string(),
        )
    })?;
    Ok(store)
}
