//! A cache must survive an API server that comes back without its state (restored
//! from an older backup, or the sandbox's emulator restarted empty): its watch resumes
//! at a resourceVersion the server never reached, the server answers 504 "Too large
//! resource version", and the cache must list again instead of retrying that version
//! forever.

use std::sync::Arc;
use std::time::Duration;

use ferrolb_emulator::{Config, Emulator};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

fn cm(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c
}

async fn serve(emu: &Emulator, port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let e = emu.clone();
    tokio::spawn(async move {
        let _ = e.serve(listener).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_lists_again_when_the_server_lost_its_state() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let before = Emulator::new(Config::default());
    let served = serve(&before, port).await;
    // The binaries' client (`ferrolb_common::client`), for this server.
    let cfg = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let client = ferrolb_common::client_for(cfg).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..20 {
        Api::<ConfigMap>::namespaced(Client::new(before.router(), "default"), "default")
            .create(&PostParams::default(), &cm(&format!("old-{i}")))
            .await
            .unwrap();
    }
    let (store, task) = ferrolb_common::reflect(api, Arc::new(tokio::sync::Notify::new()));
    let names = |s: &kube::runtime::reflector::Store<ConfigMap>| {
        let mut n: Vec<String> = s.state().iter().map(|c| c.name_any()).collect();
        n.sort();
        n
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while names(&store).len() != 20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the cache holds the 20 ConfigMaps");

    // The server goes away and comes back empty, at a resourceVersion far below the cache's.
    served.abort();
    before.close_watches();
    let after = Emulator::new(Config::default());
    Api::<ConfigMap>::namespaced(Client::new(after.router(), "default"), "default")
        .create(&PostParams::default(), &cm("fresh"))
        .await
        .unwrap();
    let _served = serve(&after, port).await;
    let t0 = std::time::Instant::now();
    let relisted = tokio::time::timeout(Duration::from_secs(30), async {
        while names(&store) != ["fresh"] {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    task.abort();
    eprintln!("listed again {:?} after the server came back", t0.elapsed());
    assert!(relisted.is_ok(), "the cache kept {:?} instead of listing again", names(&store));
}
