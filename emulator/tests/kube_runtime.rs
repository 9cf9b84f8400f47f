//! kube-runtime's watcher, reflector and Controller against the in-process
//! emulator: the client the controller and speaker are built on must work
//! unchanged, including re-lists after 410 Gone and retries after 409.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrolb_crds::{IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus};
use ferrolb_emulator::{Config, Emulator};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use kube::{Client, ResourceExt};

fn client(emu: &Emulator) -> Client {
    Client::new(emu.router(), "default")
}

fn cm(name: &str, value: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.data = Some(BTreeMap::from([("k".to_string(), value.to_string())]));
    c
}

async fn install_pool_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &ferrolb_crds::crds()[0]).await.unwrap();
}

/// Pull events until `pred` holds for one, within a deadline.
async fn until<S, T>(stream: &mut S, what: &str, mut pred: impl FnMut(&T) -> bool) -> T
where
    S: futures::Stream<Item = T> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ev = stream.next().await.unwrap_or_else(|| panic!("stream ended waiting for {what}"));
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn name_of(ev: &Event<ConfigMap>) -> Option<(&'static str, String)> {
    match ev {
        Event::Apply(o) => Some(("apply", o.name_any())),
        Event::Delete(o) => Some(("delete", o.name_any())),
        Event::InitApply(o) => Some(("init-apply", o.name_any())),
        _ => None,
    }
}

async fn watcher_sees_create_modify_delete(config: watcher::Config) {
    let emu = Emulator::new(Config::default());
    let api: Api<ConfigMap> = Api::default_namespaced(client(&emu));
    api.create(&PostParams::default(), &cm("before", "0")).await.unwrap();
    let mut events = watcher::watcher(api.clone(), config).filter_map(|r| async move { r.ok() }).boxed();
    until(&mut events, "initial listing of 'before'", |e| name_of(e) == Some(("init-apply", "before".into()))).await;
    until(&mut events, "InitDone", |e| matches!(e, Event::InitDone)).await;
    api.create(&PostParams::default(), &cm("a", "1")).await.unwrap();
    let ev = until(&mut events, "create", |e| name_of(e).is_some()).await;
    assert_eq!(name_of(&ev), Some(("apply", "a".into())));
    api.patch("a", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"k": "2"}}))).await.unwrap();
    let ev = until(&mut events, "modify", |e| name_of(e).is_some()).await;
    match ev {
        Event::Apply(o) => assert_eq!(o.data.unwrap()["k"], "2"),
        other => panic!("expected modify, got {other:?}"),
    }
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let ev = until(&mut events, "delete", |e| name_of(e).is_some()).await;
    assert_eq!(name_of(&ev), Some(("delete", "a".into())));
}

#[tokio::test]
async fn watcher_list_watch_sees_create_modify_delete() {
    watcher_sees_create_modify_delete(watcher::Config::default()).await;
}

#[tokio::test]
async fn watcher_streaming_list_sees_create_modify_delete() {
    watcher_sees_create_modify_delete(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn watcher_relists_after_410_gone() {
    let emu = Emulator::new(Config::default());
    let api: Api<ConfigMap> = Api::default_namespaced(client(&emu));
    api.create(&PostParams::default(), &cm("a", "1")).await.unwrap();
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let _ = until(&mut events, "first InitDone", |e| matches!(e, Ok(Event::InitDone))).await;
    // While the watch is down, history is compacted: resuming from its rv must fail with 410.
    emu.compact_history();
    api.create(&PostParams::default(), &cm("b", "2")).await.unwrap();
    emu.compact_history();
    emu.close_watches();
    let mut saw_gone = false;
    let mut relisted = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.next().await.expect("watcher ended") {
                Err(watcher::Error::WatchError(s)) if s.code == 410 => saw_gone = true,
                Err(e) => panic!("unexpected watcher error {e:?}"),
                Ok(Event::Init) => relisted.clear(),
                Ok(Event::InitApply(o)) => relisted.push(o.name_any()),
                Ok(Event::InitDone) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("watcher re-listed");
    assert!(saw_gone, "the watcher was told 410 Gone");
    relisted.sort();
    assert_eq!(relisted, ["a", "b"], "the re-list includes the object created while disconnected");
}

#[tokio::test]
async fn reflector_store_converges_through_a_relist() {
    let emu = Emulator::new(Config::default());
    let api: Api<ConfigMap> = Api::default_namespaced(client(&emu));
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api.clone(), watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .for_each(|_| async {});
    let task = tokio::spawn(stream);
    reader.wait_until_ready().await.unwrap();
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "x")).await.unwrap();
    }
    // Deleted while the watch is down and history gone: only a re-list can notice.
    emu.close_watches();
    emu.compact_history();
    api.delete("c0", &DeleteParams::default()).await.unwrap();
    emu.compact_history();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut names: Vec<String> = reader.state().iter().map(|o| o.name_any()).collect();
            names.sort();
            if names == ["c1", "c2", "c3", "c4"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("reflector store converged after the re-list");
    task.abort();
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(#[from] kube::Error);

#[tokio::test]
async fn controller_reconciles_custom_resources_with_status_apply() {
    let emu = Emulator::new(Config::default());
    let client = client(&emu);
    install_pool_crd(&client).await;
    let pools: Api<IPAddressPool> = Api::default_namespaced(client.clone());
    let reconciles = Arc::new(AtomicUsize::new(0));
    let ctx = Arc::new((pools.clone(), reconciles.clone()));
    let controller = Controller::new(pools.clone(), watcher::Config::default())
        .run(
            |pool: Arc<IPAddressPool>, ctx: Arc<(Api<IPAddressPool>, Arc<AtomicUsize>)>| async move {
                ctx.1.fetch_add(1, Ordering::SeqCst);
                let n = pool.spec.addresses.len() as i64;
                let status = serde_json::json!({
                    "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                    "status": IPAddressPoolStatus { available_ipv4: n, ..Default::default() },
                });
                ctx.0
                    .patch_status(&pool.name_any(), &PatchParams::apply("ferrolb-test").force(), &Patch::Apply(status))
                    .await?;
                Ok::<_, ReconcileError>(Action::await_change())
            },
            |_, _, _| Action::requeue(Duration::from_millis(50)),
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                eprintln!("controller error: {e:?}");
            }
        });
    let task = tokio::spawn(controller);
    let spec = IPAddressPoolSpec {
        addresses: vec!["198.51.100.0/24".into(), "203.0.113.0/24".into()],
        auto_assign: true,
        avoid_buggy_ips: false,
        service_allocation: None,
    };
    pools.create(&PostParams::default(), &IPAddressPool::new("p", spec)).await.unwrap();
    let wait_for = |want: i64| {
        let pools = pools.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    let p = pools.get("p").await.unwrap();
                    if p.status.as_ref().map(|s| s.available_ipv4) == Some(want) {
                        return p;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("status never reached {want}"))
        }
    };
    let p = wait_for(2).await;
    let managers: Vec<String> =
        p.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"ferrolb-test".to_string()), "{managers:?}");
    // A spec change triggers a new reconcile; status writes alone do not loop forever.
    pools
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"addresses": ["198.51.100.0/24"]}})),
        )
        .await
        .unwrap();
    wait_for(1).await;
    let settled = reconciles.load(Ordering::SeqCst);
    assert!(settled <= 6, "reconcile loop did not settle: {settled} runs");
    task.abort();
}

#[tokio::test]
async fn conflicting_writers_retry_on_409_and_lose_nothing() {
    let emu = Emulator::new(Config::default());
    let api: Api<ConfigMap> = Api::default_namespaced(client(&emu));
    api.create(&PostParams::default(), &cm("counter", "0")).await.unwrap();
    let conflicts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let api = api.clone();
        let conflicts = conflicts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                loop {
                    let mut c = api.get("counter").await.unwrap();
                    let n: u32 = c.data.as_ref().unwrap()["k"].parse().unwrap();
                    c.data.as_mut().unwrap().insert("k".into(), (n + 1).to_string());
                    tokio::task::yield_now().await;
                    match api.replace("counter", &PostParams::default(), &c).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            conflicts.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let final_count = api.get("counter").await.unwrap().data.unwrap()["k"].clone();
    assert_eq!(final_count, "40", "every increment survived");
    assert!(conflicts.load(Ordering::SeqCst) > 0, "concurrent replaces must have conflicted");
}
