//! The memberlist key Secret against the in-process emulator: made once, never changed.

mod common;

use common::{Cluster, NS};
use ferrolb_controller::memberlist::{KEY, Outcome, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

#[tokio::test]
async fn the_key_is_created_once_and_an_existing_secret_is_never_changed() {
    let c = Cluster::new().await;
    let api: Api<Secret> = Api::namespaced(c.client.clone(), NS);
    let labels = Default::default();
    assert_eq!(ensure(&api, "ferrolb-memberlist", &labels).await.unwrap(), Outcome::Created);
    let first = api.get("ferrolb-memberlist").await.unwrap();
    let key = first.data.as_ref().unwrap()[KEY].0.clone();
    assert!(key.len() >= 40, "32 random bytes, base64: {} bytes", key.len());
    // A second replica, a restart, a re-render of the chart: the same key.
    assert_eq!(ensure(&api, "ferrolb-memberlist", &labels).await.unwrap(), Outcome::Exists);
    let again = api.get("ferrolb-memberlist").await.unwrap();
    assert_eq!(again.data.as_ref().unwrap()[KEY].0, key);
    assert_eq!(again.metadata.resource_version, first.metadata.resource_version, "not even rewritten");
    // Another Secret gets another key.
    ensure(&api, "other", &labels).await.unwrap();
    assert_ne!(api.get("other").await.unwrap().data.unwrap()[KEY].0, key);
    // An operator's Secret without a usable key is reported, not replaced.
    let bad = Secret {
        metadata: ObjectMeta { name: Some("theirs".into()), ..Default::default() },
        data: Some([(KEY.to_string(), ByteString(b"short".to_vec()))].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &bad).await.unwrap();
    let got = ensure(&api, "theirs", &labels).await.unwrap();
    assert!(matches!(&got, Outcome::Unusable(why) if why.contains("5 bytes")), "{got:?}");
    assert_eq!(api.get("theirs").await.unwrap().data.unwrap()[KEY].0, b"short");
}
