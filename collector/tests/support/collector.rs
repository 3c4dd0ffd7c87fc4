//! A collector on 127.0.0.1 for tests, with tokens and real probes'
//! uploaders: shared by the tests that talk to one over the network.

use std::net::SocketAddr;
use std::time::Duration;
use vantage_collector::{
    hash_token, new_token, Collector, CollectorConfig, StoreLocation, UploadLimits,
};
use vantage_probe::upload::{CollectorTarget, Uploader};
use vantage_probe::Trust;
use vantage_tls::Identity;

pub struct Setup {
    pub collector: Collector,
    pub db: StoreLocation,
    _dir: tempfile::TempDir,
}

pub async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreLocation::Sqlite(dir.path().join("c.db"));
    setup_on(db, dir).await
}

pub async fn setup_on(db: StoreLocation, dir: tempfile::TempDir) -> Setup {
    setup_limited(db, dir, UploadLimits::default()).await
}

pub async fn setup_limited(
    db: StoreLocation,
    dir: tempfile::TempDir,
    limits: UploadLimits,
) -> Setup {
    let collector = Collector::start(CollectorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        identity: Identity::generate(&["localhost".into()]).unwrap(),
        db: db.clone(),
        max_connections: 64,
        keep_raw: None,
        limits,
    })
    .await
    .unwrap();
    Setup {
        collector,
        db,
        _dir: dir,
    }
}

pub fn add_token(db: &StoreLocation, probe: &str) -> String {
    let token = new_token();
    db.open()
        .unwrap()
        .add_token(probe, &hash_token(&token), 1)
        .unwrap();
    token
}

pub fn uploader(s: &Setup, port: u16, token: &str) -> Uploader {
    Uploader::new(CollectorTarget {
        host: "127.0.0.1".into(),
        port,
        server_name: "localhost".into(),
        trust: Trust::Pinned(vec![s.collector.fingerprint()]),
        token: token.into(),
    })
    .unwrap()
    .with_quic_timeout(Duration::from_millis(300))
}

/// A TCP-only forwarder to the collector's HTTPS port: the probe sees a
/// port where UDP gets no answer, as on a network that blocks it.
pub async fn tcp_only_forwarder(to: SocketAddr) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut a, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut b) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    });
    port
}
