//! csync's replica run inside a test process, shared by the tests that drive the
//! client library against it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use csync_mailstore::{Store, StoreConfig};

/// csync's replica on a free loopback port, served by a thread of this process.
pub fn start_replica(dir: &Path) -> (u16, PathBuf) {
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    let conf = dir.join("imapd.conf");
    std::fs::write(
        &conf,
        format!(
            "configdirectory: {d}/conf\npartition-default: {d}/spool\nservername: replica.test\n\
             admins: repluser\nallowplaintext: yes\nfailedloginpause: 0\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut passwords = csync_auth::passwd::PasswordFile::new(dir.join("conf/csync.passwd"));
    passwords.set("repluser", "secret").unwrap();
    passwords.save().unwrap();
    let config = csync_sync_server::config::ServerConfig::from_imapd(
        &csync_config::Config::from_file(&conf).unwrap(),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let shared = Arc::new(csync_sync_server::server::Shared::new(config).unwrap());
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (_stop, stopped) = tokio::sync::watch::channel(false);
            let _ = csync_sync_server::server::serve(shared, vec![listener], stopped).await;
        });
    });
    (port, conf)
}

/// The store an imapd.conf describes.
pub fn open_store(conf: &Path) -> Store {
    let conf = csync_config::Config::from_file(conf).unwrap();
    Store::open(StoreConfig::from_imapd(&conf).unwrap()).unwrap()
}
