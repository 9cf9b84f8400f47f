//! The emulator over HTTPS, as kube-apiserver serves: kube-rs and kubectl connect
//! when they trust its CA, and refuse when they do not.

use std::process::Command;

use ferrolb_emulator::{Config, Emulator, ServingCert, write_kubeconfig_full};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

async fn client_from(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

#[tokio::test]
async fn https_with_the_emulators_ca_and_only_with_it() {
    let emu = Emulator::new(Config::default());
    let cert = ServingCert::generate(&["127.0.0.1", "localhost"]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (e, c) = (emu.clone(), cert.clone());
    tokio::spawn(async move { e.serve_tls(listener, &c).await });
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    write_kubeconfig_full(&good, &format!("https://{addr}"), Some(&cert.ca_pem), Some("any")).unwrap();
    let client = client_from(&good).await.unwrap();
    let names: Vec<String> = Api::<Namespace>::all(client)
        .list(&Default::default())
        .await
        .expect("kube-rs over TLS")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");

    // Another CA: the handshake fails, as against a real server.
    let stranger = ServingCert::generate(&["127.0.0.1"]).unwrap();
    let bad = dir.path().join("bad");
    write_kubeconfig_full(&bad, &format!("https://{addr}"), Some(&stranger.ca_pem), Some("any")).unwrap();
    let refused = Api::<Namespace>::all(client_from(&bad).await.unwrap()).list(&Default::default()).await;
    assert!(refused.is_err(), "a client that does not trust the CA is refused");

    // kubectl too.
    let kubectl = |kubeconfig: &std::path::Path| {
        let kc = kubeconfig.to_path_buf();
        std::thread::spawn(move || {
            Command::new("kubectl").env("KUBECONFIG", kc).args(["get", "namespaces", "-o", "name"]).output().unwrap()
        })
        .join()
        .unwrap()
    };
    let out = tokio::task::spawn_blocking({
        let good = good.clone();
        move || kubectl(&good)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/default"));
    let out = tokio::task::spawn_blocking(move || kubectl(&bad)).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate"), "{}", String::from_utf8_lossy(&out.stderr));
}
