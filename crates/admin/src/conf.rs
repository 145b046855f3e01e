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

/// Opens the store for a command, with the sync_log writer of imapd.conf attached
/// (`sync_log`, `sync_log_channels`), so every change csyncadm makes reaches the
/// rolling `sync_client` as Cyrus's own tools' changes do.
pub fn open_store(conf: &Conf) -> anyhow::Result<Store> {
    let shown = conf.store.configdirectory.display().to_string();
    let mut store =
        Store::open(conf.store.clone()).with_context(|| doing("cannot open the store", &shown))?;
    let log = csync_synclog::SyncLog::from_config(&conf.imapd)
        .with_context(|| doing("cannot use the sync_log settings", &shown))?;
    store.set_changelog(Some(Box::new(log)));
    Ok(store)
}
