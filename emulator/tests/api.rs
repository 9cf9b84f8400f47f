//! API-server semantics over HTTP, each as a client would observe it.

mod common;

use std::time::Duration;

use common::*;
use ferrolb_emulator::{Config, Emulator};
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const POOLS: &str = "/apis/ferrolb.io/v1beta1/namespaces/default/ipaddresspools";

fn emu() -> Emulator {
    Emulator::new(Config::default())
}

async fn with_pool_crd(emu: &Emulator) {
    let r = post(emu, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &pool_crd()).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn objects_get_identity_and_monotonic_resource_versions() {
    let emu = emu();
    let a = post(&emu, CMS, &cm("a", json!({}))).await;
    assert_eq!(a.status, 201);
    let b = post(&emu, CMS, &cm("b", json!({}))).await;
    let meta = &a.body["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["generation"], 1);
    assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(meta["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(rv(&b.body) > rv(&a.body));
    let list = get(&emu, CMS).await;
    assert_eq!(list.body["kind"], "ConfigMapList");
    let list_rv: u64 = list.body["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(list_rv >= rv(&b.body));
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let emu = emu();
    post(&emu, CMS, &cm("web", json!({"app": "web", "tier": "front"}))).await;
    post(&emu, CMS, &cm("db", json!({"app": "db"}))).await;
    post(&emu, CMS, &cm("bare", json!({}))).await;
    let names = |v: &Value| -> Vec<String> {
        v["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect()
    };
    let q =
        |sel: &str| format!("{CMS}?labelSelector={}", sel.replace(' ', "%20").replace('!', "%21").replace('=', "%3D"));
    assert_eq!(names(&get(&emu, &q("app=web")).await.body), ["web"]);
    assert_eq!(names(&get(&emu, &q("app!=web")).await.body), ["bare", "db"]);
    assert_eq!(names(&get(&emu, &q("app in (web,db)")).await.body), ["db", "web"]);
    assert_eq!(names(&get(&emu, &q("app notin (web)")).await.body), ["bare", "db"]);
    assert_eq!(names(&get(&emu, &q("tier")).await.body), ["web"]);
    assert_eq!(names(&get(&emu, &q("!app")).await.body), ["bare"]);
    assert_eq!(names(&get(&emu, &format!("{CMS}?fieldSelector=metadata.name%3Ddb")).await.body), ["db"]);
    assert_eq!(names(&get(&emu, "/api/v1/configmaps?fieldSelector=metadata.namespace%3Ddefault").await.body).len(), 3);
    let bad = get(&emu, &format!("{CMS}?fieldSelector=data.k%3Dv")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["kind"], "Status");
}

#[tokio::test]
async fn lists_paginate_with_limit_and_continue() {
    let emu = emu();
    for i in 0..5 {
        post(&emu, CMS, &cm(&format!("c{i}"), json!({}))).await;
    }
    let mut seen = Vec::new();
    let mut uri = format!("{CMS}?limit=2");
    loop {
        let page = get(&emu, &uri).await.body;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()));
        match page["metadata"]["continue"].as_str() {
            Some(c) => uri = format!("{CMS}?limit=2&continue={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4"]);
}

#[tokio::test]
async fn watch_streams_changes_and_resumes_from_a_resource_version() {
    let emu = emu();
    let a = post(&emu, CMS, &cm("a", json!({}))).await;
    let start = rv(&a.body);
    let (code, mut w) = watch(&emu, &format!("{CMS}?watch=true&resourceVersion={start}")).await;
    assert_eq!(code, 200);
    let mut upd = a.body.clone();
    upd["data"]["k"] = json!("changed");
    assert_eq!(put(&emu, &format!("{CMS}/a"), &upd).await.status, 200);
    delete(&emu, &format!("{CMS}/a")).await;
    let e1 = w.next_change().await;
    assert_eq!(e1["type"], "MODIFIED");
    assert_eq!(e1["object"]["data"]["k"], "changed");
    let e2 = w.next_change().await;
    assert_eq!(e2["type"], "DELETED");
    assert!(rv(&e2["object"]) > rv(&e1["object"]));
    // A second watch from the original rv replays both events from history.
    let (_, mut replay) = watch(&emu, &format!("{CMS}?watch=1&resourceVersion={start}")).await;
    assert_eq!(replay.next_change().await["type"], "MODIFIED");
    assert_eq!(replay.next_change().await["type"], "DELETED");
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_synthetic_adds() {
    let emu = emu();
    post(&emu, CMS, &cm("a", json!({"app": "x"}))).await;
    post(&emu, CMS, &cm("b", json!({"app": "y"}))).await;
    let (_, mut w) = watch(&emu, &format!("{CMS}?watch=true&labelSelector=app%3Dx")).await;
    let e = w.next_change().await;
    assert_eq!((e["type"].as_str(), e["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("a")));
    // b starts matching: the watcher sees it ADDED; a stops matching: DELETED.
    patch(&emu, &format!("{CMS}/b"), "application/merge-patch+json", &json!({"metadata": {"labels": {"app": "x"}}}))
        .await;
    let e = w.next_change().await;
    assert_eq!((e["type"].as_str(), e["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("b")));
    patch(&emu, &format!("{CMS}/a"), "application/merge-patch+json", &json!({"metadata": {"labels": {"app": "z"}}}))
        .await;
    let e = w.next_change().await;
    assert_eq!((e["type"].as_str(), e["object"]["metadata"]["name"].as_str()), (Some("DELETED"), Some("a")));
}

#[tokio::test]
async fn watch_from_compacted_history_answers_410_gone() {
    let emu = Emulator::new(Config { history_limit: 3, ..Config::default() });
    let first = post(&emu, CMS, &cm("a", json!({}))).await;
    for i in 0..10 {
        post(&emu, CMS, &cm(&format!("n{i}"), json!({}))).await;
    }
    let (code, mut w) = watch(&emu, &format!("{CMS}?watch=true&resourceVersion={}", rv(&first.body))).await;
    assert_eq!(code, 200, "the real server reports 410 inside the stream");
    let e = w.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(w.next_within(Duration::from_secs(5)).await.is_none(), "stream ends after the error");
    // A recent rv still resumes.
    let now = emu.resource_version();
    let (_, mut ok) = watch(&emu, &format!("{CMS}?watch=true&resourceVersion={now}")).await;
    post(&emu, CMS, &cm("later", json!({}))).await;
    assert_eq!(ok.next_change().await["object"]["metadata"]["name"], "later");
}

#[tokio::test]
async fn streaming_list_ends_initial_events_with_annotated_bookmark() {
    let emu = emu();
    post(&emu, CMS, &cm("a", json!({}))).await;
    let bad = get(&emu, &format!("{CMS}?watch=true&sendInitialEvents=true")).await;
    assert_eq!(bad.status, 422, "sendInitialEvents needs resourceVersionMatch=NotOlderThan");
    let (_, mut w) = watch(
        &emu,
        &format!("{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"),
    )
    .await;
    let e = w.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(e["type"], "ADDED");
    let b = w.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert_eq!(rv(&b["object"]), emu.resource_version());
}

#[tokio::test]
async fn periodic_bookmarks_and_timeout_seconds() {
    let emu = Emulator::new(Config { bookmark_interval: Duration::from_millis(100), ..Config::default() });
    let now = emu.resource_version();
    let (_, mut w) =
        watch(&emu, &format!("{CMS}?watch=true&resourceVersion={now}&allowWatchBookmarks=true&timeoutSeconds=1")).await;
    let b = w.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(b["object"]["kind"], "ConfigMap");
    assert_eq!(rv(&b["object"]), now);
    let started = tokio::time::Instant::now();
    while w.next_within(Duration::from_secs(5)).await.is_some() {}
    assert!(started.elapsed() < Duration::from_secs(3), "timeoutSeconds=1 ends the stream");
    // Without allowWatchBookmarks, none arrive.
    let (_, mut quiet) = watch(&emu, &format!("{CMS}?watch=true&resourceVersion={now}&timeoutSeconds=1")).await;
    assert!(quiet.next_within(Duration::from_secs(5)).await.is_none());
}

#[tokio::test]
async fn put_and_patch_with_stale_resource_version_conflict() {
    let emu = emu();
    let a = post(&emu, CMS, &cm("a", json!({}))).await.body;
    let mut first = a.clone();
    first["data"]["k"] = json!("1");
    assert_eq!(put(&emu, &format!("{CMS}/a"), &first).await.status, 200);
    let mut stale = a.clone();
    stale["data"]["k"] = json!("2");
    let r = put(&emu, &format!("{CMS}/a"), &stale).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["reason"], "Conflict");
    assert!(r.body["message"].as_str().unwrap().contains("the object has been modified"));
    let r = patch(
        &emu,
        &format!("{CMS}/a"),
        "application/merge-patch+json",
        &json!({"metadata": {"resourceVersion": a["metadata"]["resourceVersion"]}, "data": {"k": "3"}}),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(get(&emu, &format!("{CMS}/a")).await.body["data"]["k"], "1");
}

#[tokio::test]
async fn no_op_writes_keep_the_resource_version() {
    let emu = emu();
    let a = post(&emu, CMS, &cm("a", json!({}))).await.body;
    let r = patch(&emu, &format!("{CMS}/a"), "application/merge-patch+json", &json!({"data": {"k": "v"}})).await;
    assert_eq!(rv(&r.body), rv(&a));
}

#[tokio::test]
async fn json_patch_test_and_strategic_merge() {
    let emu = emu();
    post(&emu, CMS, &cm("a", json!({}))).await;
    let ok = patch(
        &emu,
        &format!("{CMS}/a"),
        "application/json-patch+json",
        &json!([{"op": "test", "path": "/data/k", "value": "v"}, {"op": "replace", "path": "/data/k", "value": "w"}]),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["data"]["k"], "w");
    let failed = patch(&emu, &format!("{CMS}/a"), "application/json-patch+json",
        &json!([{"op": "test", "path": "/data/k", "value": "nope"}, {"op": "replace", "path": "/data/k", "value": "x"}])).await;
    assert_eq!(failed.status, 422);
    assert_eq!(get(&emu, &format!("{CMS}/a")).await.body["data"]["k"], "w");
    let smp = patch(
        &emu,
        &format!("{CMS}/a"),
        "application/strategic-merge-patch+json",
        &json!({"metadata": {"finalizers": ["x.io/y"]}}),
    )
    .await;
    assert_eq!(smp.body["metadata"]["finalizers"], json!(["x.io/y"]));
    with_pool_crd(&emu).await;
    let p = post(&emu, POOLS, &json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"}, "spec": {"addresses": ["198.51.100.0/24"]}})).await;
    assert_eq!(p.status, 201, "{}", p.body);
    let r = patch(
        &emu,
        &format!("{POOLS}/p"),
        "application/strategic-merge-patch+json",
        &json!({"spec": {"autoAssign": false}}),
    )
    .await;
    assert_eq!(r.status, 415, "strategic merge is not supported for custom resources");
    let bogus = call(&emu, "PATCH", &format!("{CMS}/a"), "text/plain", "x").await;
    assert_eq!(bogus.status, 415);
}

#[tokio::test]
async fn server_side_apply_creates_tracks_managers_and_conflicts() {
    let emu = emu();
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let r = call(&emu, "PATCH", &format!("{CMS}/applied?fieldManager=one"), "application/apply-patch+yaml", yaml).await;
    assert_eq!(r.status, 201, "apply creates: {}", r.body);
    let mf = &r.body["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "one");
    assert_eq!(mf["operation"], "Apply");
    assert!(mf["fieldsV1"]["f:data"]["f:a"].is_object());
    let missing = call(&emu, "PATCH", &format!("{CMS}/applied"), "application/apply-patch+yaml", yaml).await;
    assert_eq!(missing.status, 400, "apply needs a fieldManager");
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: \"9\"\n";
    let c =
        call(&emu, "PATCH", &format!("{CMS}/applied?fieldManager=two"), "application/apply-patch+yaml", other).await;
    assert_eq!(c.status, 409);
    assert_eq!(c.body["details"]["causes"][0]["field"], ".data.a");
    let f = call(
        &emu,
        "PATCH",
        &format!("{CMS}/applied?fieldManager=two&force=true"),
        "application/apply-patch+yaml",
        other,
    )
    .await;
    assert_eq!(f.status, 200);
    assert_eq!(f.body["data"], json!({"a": "9", "b": "2"}));
    // Manager one stops applying b: b goes, since nobody else owns it.
    let shrink = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata: {}\n";
    let s =
        call(&emu, "PATCH", &format!("{CMS}/applied?fieldManager=one"), "application/apply-patch+yaml", shrink).await;
    assert_eq!(s.body["data"], json!({"a": "9"}));
}

#[tokio::test]
async fn reapplying_what_a_manager_owns_in_main_and_status_writes_nothing() {
    let emu = emu();
    with_pool_crd(&emu).await;
    let main = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"addresses": ["198.51.100.0/24"]}});
    let status = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"},
        "status": {"assignedIPv4": 2}});
    let apply = |path: String, body: &Value| {
        let body = body.to_string();
        let emu = &emu;
        async move { call(emu, "PATCH", &format!("{path}?fieldManager=m"), "application/apply-patch+yaml", body).await }
    };
    apply(format!("{POOLS}/p"), &main).await;
    let first = apply(format!("{POOLS}/p/status"), &status).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let rv = first.body["metadata"]["resourceVersion"].clone();
    // The same two applies again, in either order: no write, no new resourceVersion.
    for (path, body) in
        [(format!("{POOLS}/p"), &main), (format!("{POOLS}/p/status"), &status), (format!("{POOLS}/p"), &main)]
    {
        let again = apply(path.clone(), body).await;
        assert_eq!(again.body["metadata"]["resourceVersion"], rv, "{path}: {}", again.body["metadata"]);
    }
    let entries: Vec<Value> = first.body["metadata"]["managedFields"].as_array().unwrap().clone();
    let subresources: Vec<&str> = entries.iter().map(|e| e["subresource"].as_str().unwrap_or("")).collect();
    assert_eq!(subresources, ["", "status"], "kube-apiserver's order: operation, time, manager, subresource");
}

#[tokio::test]
async fn status_subresource_is_separate_from_spec() {
    let emu = emu();
    with_pool_crd(&emu).await;
    let created = post(
        &emu,
        POOLS,
        &json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"},
        "spec": {"addresses": ["198.51.100.0/24"]}, "status": {"assignedIPv4": 5}}),
    )
    .await;
    assert_eq!(created.status, 201);
    assert!(created.body.get("status").is_none(), "status on create is dropped");
    let mut obj = created.body.clone();
    obj["status"] = json!({"assignedIPv4": 3});
    let st = put(&emu, &format!("{POOLS}/p/status"), &obj).await;
    assert_eq!(st.status, 200);
    assert_eq!(st.body["status"]["assignedIPv4"], 3);
    assert_eq!(st.body["metadata"]["generation"], 1, "status writes do not bump generation");
    let mut spec_write = st.body.clone();
    spec_write["spec"]["autoAssign"] = json!(false);
    spec_write["status"]["assignedIPv4"] = json!(99);
    let sp = put(&emu, &format!("{POOLS}/p"), &spec_write).await;
    assert_eq!(sp.body["status"]["assignedIPv4"], 3, "writes to the main resource ignore status");
    assert_eq!(sp.body["spec"]["autoAssign"], false);
    assert_eq!(sp.body["metadata"]["generation"], 2);
    let mut status_with_spec = sp.body.clone();
    status_with_spec["spec"]["autoAssign"] = json!(true);
    status_with_spec["status"]["assignedIPv4"] = json!(4);
    let st2 = put(&emu, &format!("{POOLS}/p/status"), &status_with_spec).await;
    assert_eq!(st2.body["spec"]["autoAssign"], false, "status writes ignore spec");
    assert_eq!(st2.body["status"]["assignedIPv4"], 4);
    let ms = patch(
        &emu,
        &format!("{POOLS}/p/status"),
        "application/merge-patch+json",
        &json!({"status": {"availableIPv4": 250}}),
    )
    .await;
    assert_eq!(ms.body["status"]["availableIPv4"], 250);
    let ssa = call(
        &emu,
        "PATCH",
        &format!("{POOLS}/p/status?fieldManager=ferrolb-controller&force=true"),
        "application/apply-patch+yaml",
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: p\nstatus:\n  assignedIPv6: 7\n",
    )
    .await;
    assert_eq!(ssa.status, 200, "{}", ssa.body);
    assert_eq!(ssa.body["status"]["assignedIPv6"], 7);
    let mf = ssa.body["metadata"]["managedFields"].as_array().unwrap();
    assert!(mf.iter().any(|m| m["manager"] == "ferrolb-controller" && m["subresource"] == "status"));
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let emu = emu();
    let mut c = cm("f", json!({}));
    c["metadata"]["finalizers"] = json!(["ferrolb.io/test"]);
    post(&emu, CMS, &c).await;
    let (_, mut w) = watch(&emu, &format!("{CMS}?watch=true&resourceVersion={}", emu.resource_version())).await;
    let d = delete(&emu, &format!("{CMS}/f")).await;
    assert_eq!(d.status, 200);
    assert!(d.body["metadata"]["deletionTimestamp"].is_string());
    let still = get(&emu, &format!("{CMS}/f")).await;
    assert_eq!(still.status, 200);
    assert_eq!(w.next_change().await["type"], "MODIFIED");
    let add = patch(
        &emu,
        &format!("{CMS}/f"),
        "application/merge-patch+json",
        &json!({"metadata": {"finalizers": ["ferrolb.io/test", "other.io/x"]}}),
    )
    .await;
    assert_eq!(add.status, 422, "no new finalizers on an object being deleted");
    let rm =
        patch(&emu, &format!("{CMS}/f"), "application/merge-patch+json", &json!({"metadata": {"finalizers": null}}))
            .await;
    assert_eq!(rm.status, 200);
    assert_eq!(w.next_change().await["type"], "MODIFIED");
    assert_eq!(w.next_change().await["type"], "DELETED");
    assert_eq!(get(&emu, &format!("{CMS}/f")).await.status, 404);
}

#[tokio::test]
async fn errors_are_status_objects_with_the_real_codes() {
    let emu = emu();
    let nf = get(&emu, &format!("{CMS}/nope")).await;
    assert_eq!((nf.status, nf.body["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(nf.body["message"], "configmaps \"nope\" not found");
    post(&emu, CMS, &cm("dup", json!({}))).await;
    let ae = post(&emu, CMS, &cm("dup", json!({}))).await;
    assert_eq!((ae.status, ae.body["reason"].as_str()), (409, Some("AlreadyExists")));
    let inv = post(&emu, CMS, &cm("Not_Valid", json!({}))).await;
    assert_eq!((inv.status, inv.body["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(inv.body["details"]["causes"][0]["field"], "metadata.name");
    let unknown = get(&emu, "/apis/nothing.io/v1/widgets").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["kind"], "Status");
    let ns = post(&emu, "/api/v1/namespaces/absent/configmaps", &cm("x", json!({}))).await;
    assert_eq!(ns.status, 404);
    assert_eq!(ns.body["message"], "namespaces \"absent\" not found");
}

#[tokio::test]
async fn bad_input_gets_clear_answers_and_the_server_keeps_serving() {
    let emu = Emulator::new(Config { max_body_bytes: 64 * 1024, ..Config::default() });
    let malformed = call(&emu, "POST", CMS, "application/json", "{not json").await;
    assert_eq!(malformed.status, 400);
    assert!(malformed.body["message"].as_str().unwrap().contains("error decoding JSON body"));
    let wrong_av = post(&emu, CMS, &json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "x"}})).await;
    assert_eq!(wrong_av.status, 400);
    assert!(wrong_av.body["message"].as_str().unwrap().contains("does not match the expected API version"));
    let wrong_kind = post(&emu, CMS, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})).await;
    assert_eq!(wrong_kind.status, 400);
    // A typed client's body (no apiVersion, no kind): taken from the URL for a built-in
    // type, as kube-apiserver does; a custom resource must say what it is.
    let untyped = post(&emu, CMS, &json!({"metadata": {"name": "untyped"}, "data": {"a": "1"}})).await;
    assert_eq!(
        (untyped.status, &untyped.body["kind"], &untyped.body["apiVersion"]),
        (201, &json!("ConfigMap"), &json!("v1"))
    );
    let mut again = untyped.body.clone();
    again.as_object_mut().unwrap().retain(|k, _| k != "kind" && k != "apiVersion");
    again["data"]["a"] = json!("2");
    let replaced = put(&emu, &format!("{CMS}/untyped"), &again).await;
    assert_eq!((replaced.status, &replaced.body["data"]["a"]), (200, &json!("2")));
    with_pool_crd(&emu).await;
    let no_kind =
        post(&emu, POOLS, &json!({"metadata": {"name": "x"}, "spec": {"addresses": ["198.51.100.0/24"]}})).await;
    assert_eq!(no_kind.status, 400);
    assert!(no_kind.body["message"].as_str().unwrap().contains("Object 'Kind' is missing"), "{}", no_kind.body);
    let no_name = post(&emu, CMS, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})).await;
    assert_eq!(no_name.status, 422);
    assert_eq!(no_name.body["details"]["causes"][0]["field"], "metadata.name");
    let generated =
        post(&emu, CMS, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}})).await;
    assert_eq!(generated.status, 201);
    assert!(generated.body["metadata"]["name"].as_str().unwrap().starts_with("gen-"));
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x".repeat(100_000)}});
    let r = post(&emu, CMS, &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["reason"], "RequestEntityTooLarge");
    let not_obj = call(&emu, "POST", CMS, "application/json", "[1,2]").await;
    assert_eq!(not_obj.status, 400);
    let bad_sel = get(&emu, &format!("{CMS}?labelSelector=a%20in%20b")).await;
    assert_eq!(bad_sel.status, 400);
    let bad_limit = get(&emu, &format!("{CMS}?limit=many")).await;
    assert_eq!(bad_limit.status, 400);
    let bad_cont = get(&emu, &format!("{CMS}?limit=1&continue=%%%")).await;
    assert_eq!(bad_cont.status, 400);
    // Still serving.
    assert_eq!(post(&emu, CMS, &cm("fine", json!({}))).await.status, 201);
}

#[tokio::test]
async fn crds_make_resources_servable_and_validate_objects() {
    let emu = emu();
    assert_eq!(get(&emu, POOLS).await.status, 404, "not servable before the CRD exists");
    with_pool_crd(&emu).await;
    let crd = get(&emu, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ipaddresspools.ferrolb.io").await;
    let conds = crd.body["status"]["conditions"].as_array().unwrap();
    assert!(conds.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    let disc = get(&emu, "/apis/ferrolb.io/v1beta1").await;
    let res = disc.body["resources"].as_array().unwrap();
    assert!(
        res.iter()
            .any(|r| r["name"] == "ipaddresspools" && r["shortNames"] == json!(["ippool"]) && r["namespaced"] == true)
    );
    assert!(res.iter().any(|r| r["name"] == "ipaddresspools/status"));
    let groups = get(&emu, "/apis").await;
    assert!(groups.body["groups"].as_array().unwrap().iter().any(|g| g["name"] == "ferrolb.io"));
    let pool = |addrs: Value| json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"}, "spec": {"addresses": addrs}});
    let empty = post(&emu, POOLS, &pool(json!([]))).await;
    assert_eq!(empty.status, 422);
    assert!(empty.body["message"].as_str().unwrap().contains("spec.addresses"), "{}", empty.body["message"]);
    let garbage = post(&emu, POOLS, &pool(json!(["banana"]))).await;
    assert_eq!(garbage.status, 422);
    assert!(garbage.body["message"].as_str().unwrap().contains("must be a CIDR"), "{}", garbage.body["message"]);
    let mut with_typo = pool(json!(["198.51.100.0/24"]));
    with_typo["spec"]["autoAsign"] = json!(false);
    let strict = post(&emu, &format!("{POOLS}?fieldValidation=Strict"), &with_typo).await;
    assert_eq!(strict.status, 400);
    assert!(strict.body["message"].as_str().unwrap().contains("unknown field \"spec.autoAsign\""));
    let warned = post(&emu, POOLS, &with_typo).await;
    assert_eq!(warned.status, 201);
    assert!(warned.headers.get("warning").unwrap().to_str().unwrap().contains("spec.autoAsign"));
    assert_eq!(warned.body["spec"]["autoAssign"], true, "defaulted, typo pruned");
    // Deleting the CRD removes its objects and the route.
    let (_, mut w) = watch(&emu, &format!("{POOLS}?watch=true&resourceVersion={}", emu.resource_version())).await;
    assert_eq!(
        delete(&emu, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ipaddresspools.ferrolb.io").await.status,
        200
    );
    assert_eq!(w.next_change().await["type"], "DELETED");
    assert_eq!(get(&emu, POOLS).await.status, 404);
}

#[tokio::test]
async fn services_get_cluster_ips_and_unique_node_ports() {
    let emu = emu();
    let svc = |name: &str, ports: Value| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": ports}})
    };
    let a = post(&emu, "/api/v1/namespaces/default/services", &svc("a", json!([{"port": 80}]))).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(a.body["spec"]["clusterIP"].as_str().unwrap().starts_with("10.96."));
    let np = a.body["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let clash =
        post(&emu, "/api/v1/namespaces/default/services", &svc("b", json!([{"port": 80, "nodePort": np}]))).await;
    assert_eq!(clash.status, 422);
    assert!(clash.body["message"].as_str().unwrap().contains("spec.ports[0].nodePort"));
    let range =
        post(&emu, "/api/v1/namespaces/default/services", &svc("c", json!([{"port": 80, "nodePort": 99}]))).await;
    assert_eq!(range.status, 422);
    assert_eq!(delete(&emu, "/api/v1/namespaces/default/services/a").await.status, 200);
    let reuse =
        post(&emu, "/api/v1/namespaces/default/services", &svc("b", json!([{"port": 80, "nodePort": np}]))).await;
    assert_eq!(reuse.status, 201, "a deleted Service's NodePort is free again");
    let nolb = post(
        &emu,
        "/api/v1/namespaces/default/services",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "d"},
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}}),
    )
    .await;
    assert!(nolb.body["spec"]["ports"][0].get("nodePort").is_none());
    assert_eq!(nolb.body["status"], json!({"loadBalancer": {}}));
}

#[tokio::test]
async fn tables_carry_printer_columns() {
    let emu = emu();
    with_pool_crd(&emu).await;
    post(&emu, POOLS, &json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"}, "spec": {"addresses": ["198.51.100.0/24"]}})).await;
    let req = http::Request::builder()
        .uri(POOLS)
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
        .body(axum::body::Body::empty())
        .unwrap();
    use tower::ServiceExt;
    let resp = emu.router().oneshot(req).await.unwrap();
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    let t: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> =
        t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(cols[0], "Name");
    assert!(cols.contains(&"Addresses") && cols.contains(&"Auto Assign"));
    let row = &t["rows"][0];
    assert_eq!(row["cells"][0], "p");
    let addr_idx = cols.iter().position(|c| *c == "Addresses").unwrap();
    assert_eq!(row["cells"][addr_idx], "[\"198.51.100.0/24\"]");
    assert_eq!(row["object"]["metadata"]["name"], "p");
}

#[tokio::test]
async fn namespace_deletion_removes_its_contents() {
    let emu = emu();
    post(&emu, "/api/v1/namespaces", &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}}))
        .await;
    post(&emu, "/api/v1/namespaces/gone/configmaps", &cm("c", json!({}))).await;
    let d = delete(&emu, "/api/v1/namespaces/gone").await;
    assert_eq!(d.status, 200);
    assert_eq!(get(&emu, "/api/v1/namespaces/gone/configmaps/c").await.status, 404);
    assert_eq!(get(&emu, "/api/v1/namespaces/gone").await.status, 404);
}

#[tokio::test]
async fn discovery_and_version_for_kubectl() {
    let emu = emu();
    assert_eq!(get(&emu, "/api").await.body["versions"], json!(["v1"]));
    let core = get(&emu, "/api/v1").await.body;
    assert_eq!(core["groupVersion"], "v1");
    let svc = core["resources"].as_array().unwrap().iter().find(|r| r["name"] == "services").unwrap().clone();
    assert_eq!(svc["shortNames"], json!(["svc"]));
    assert!(svc["verbs"].as_array().unwrap().contains(&json!("watch")));
    assert_eq!(get(&emu, "/version").await.body["major"], "1");
    assert_eq!(get(&emu, "/apis/coordination.k8s.io/v1").await.body["resources"][0]["name"], "leases");
    assert_eq!(get(&emu, "/openapi/v2").await.status, 404);
}

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth > 3 { 5 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next() as i64),
            3 => json!(
                ["", "x", "198.51.100.1", "-1", "None", "LoadBalancer", "IPv6", "a,b", "\u{0}"][self.below(9) as usize]
            ),
            4 => json!(-(self.below(70000) as i64)),
            5 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => {
                let keys = [
                    "metadata",
                    "spec",
                    "status",
                    "name",
                    "ports",
                    "port",
                    "nodePort",
                    "addresses",
                    "type",
                    "labels",
                    "finalizers",
                    "ipFamilies",
                    "ipFamilyPolicy",
                    "clusterIP",
                    "resourceVersion",
                    "op",
                    "path",
                    "value",
                ];
                let mut m = serde_json::Map::new();
                for _ in 0..self.below(5) {
                    m.insert(keys[self.below(keys.len() as u64) as usize].to_string(), self.value(depth + 1));
                }
                Value::Object(m)
            }
        }
    }
    /// A valid object with one random subtree replaced.
    fn mutate(&mut self, mut v: Value) -> Value {
        let mut cur = &mut v;
        for _ in 0..self.below(4) {
            let next_key = match cur {
                Value::Object(m) if !m.is_empty() => {
                    let keys: Vec<String> = m.keys().cloned().collect();
                    keys[self.below(keys.len() as u64) as usize].clone()
                }
                _ => break,
            };
            cur = cur.get_mut(&next_key).unwrap();
        }
        *cur = self.value(1);
        v
    }
}

#[tokio::test]
async fn random_and_mutated_bodies_never_break_the_server() {
    let emu = emu();
    with_pool_crd(&emu).await;
    let valid_svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "ipFamilyPolicy": "PreferDualStack"}});
    let valid_pool = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"},
        "spec": {"addresses": ["198.51.100.0/24"], "serviceAllocation": {"priority": 1}}});
    assert_eq!(post(&emu, "/api/v1/namespaces/default/services", &valid_svc).await.status, 201);
    assert_eq!(post(&emu, POOLS, &valid_pool).await.status, 201);
    let targets = [
        ("/api/v1/namespaces/default/services", valid_svc.clone(), "s"),
        (POOLS, valid_pool.clone(), "p"),
        (CMS, cm("c", json!({})), "c"),
    ];
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..5000 {
        let mut rng = Rng(0x5eed_f00d_dead_beef ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (base, valid, name) = &targets[i % targets.len()];
        let body = if rng.below(2) == 0 { rng.mutate(valid.clone()) } else { rng.value(0) };
        let r = match rng.below(6) {
            0 => post(&emu, base, &body).await,
            1 => put(&emu, &format!("{base}/{name}"), &body).await,
            2 => patch(&emu, &format!("{base}/{name}"), "application/merge-patch+json", &body).await,
            3 => patch(&emu, &format!("{base}/{name}"), "application/json-patch+json", &body).await,
            4 => patch(&emu, &format!("{base}/{name}/status"), "application/merge-patch+json", &body).await,
            _ => {
                call(
                    &emu,
                    "PATCH",
                    &format!("{base}/{name}?fieldManager=fuzz"),
                    "application/apply-patch+yaml",
                    body.to_string(),
                )
                .await
            }
        };
        assert!(r.status < 500, "request {i} got {}: {} (body {body})", r.status, r.body);
        if r.status >= 400 {
            assert_eq!(r.body["kind"], "Status", "request {i}: errors are Status objects");
            assert!(!r.body["message"].as_str().unwrap_or("").is_empty());
        }
        *codes.entry(r.status).or_insert(0) += 1;
    }
    assert!(codes.keys().any(|c| *c >= 400) && codes.keys().any(|c| *c < 300), "both outcomes exercised: {codes:?}");
    // Every stored Service is still a valid one.
    let svcs = get(&emu, "/api/v1/namespaces/default/services").await.body;
    for s in svcs["items"].as_array().unwrap() {
        let errs = ferrolb_emulator::services::validate_status(s);
        assert!(errs.is_empty(), "{s}");
        assert!(s["spec"]["ports"].as_array().is_some_and(|p| !p.is_empty()), "{s}");
    }
    assert_eq!(get(&emu, "/api").await.status, 200);
}

#[tokio::test]
async fn service_status_conditions_are_validated_as_upstream() {
    let emu = emu();
    let svcs = "/api/v1/namespaces/default/services";
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
    assert_eq!(post(&emu, svcs, &svc).await.status, 201);
    let cond = |reason: &str, message: String| {
        json!({"status": {"conditions": [{"type": "ferrolb.io/Allocated", "status": "False", "reason": reason,
            "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    };
    let status = format!("{svcs}/web/status");
    let ok = patch(&emu, &status, "application/merge-patch+json", &cond("InvalidAnnotation", "x".repeat(32_768))).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // A message quoting a 58 KB annotation is refused: the whole status write fails.
    let long =
        patch(&emu, &status, "application/merge-patch+json", &cond("InvalidAnnotation", "x".repeat(58_000))).await;
    assert_eq!(long.status, 422, "{}", long.body);
    assert_eq!(long.body["details"]["causes"][0]["field"], "status.conditions[0].message");
    assert_eq!(long.body["details"]["causes"][0]["reason"], "FieldValueTooLong");
    let bad_reason = patch(&emu, &status, "application/merge-patch+json", &cond("not camel case", "m".into())).await;
    assert_eq!(bad_reason.status, 422);
    assert_eq!(bad_reason.body["details"]["causes"][0]["field"], "status.conditions[0].reason");
}

#[tokio::test]
async fn events_written_with_events_k8s_io_are_core_events_too() {
    let emu = emu();
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web.1"},
        "regarding": {"apiVersion": "v1", "kind": "Service", "name": "web", "namespace": "default"},
        "reason": "IPAllocated", "note": "Assigned 198.51.100.1", "type": "Normal", "action": "Allocate",
        "reportingController": "ferrolb-controller", "reportingInstance": "c-0", "eventTime": "2026-01-01T00:00:00.000000Z"});
    let r = post(&emu, "/apis/events.k8s.io/v1/namespaces/default/events", &ev).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["apiVersion"], "events.k8s.io/v1");
    assert_eq!(r.body["note"], "Assigned 198.51.100.1");
    // kubectl describe reads core Events by involvedObject.
    let core = get(&emu, "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb").await.body;
    let item = &core["items"][0];
    assert_eq!(item["apiVersion"], "v1");
    assert_eq!(item["message"], "Assigned 198.51.100.1");
    assert_eq!(item["source"]["component"], "ferrolb-controller");
    // A series update by merge patch (as kube's Recorder does) lands in the same object.
    let p = patch(
        &emu,
        "/apis/events.k8s.io/v1/namespaces/default/events/web.1",
        "application/merge-patch+json",
        &json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:05.000000Z"}}),
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(get(&emu, "/api/v1/namespaces/default/events/web.1").await.body["series"]["count"], 2);
    let v1 = get(&emu, "/apis/events.k8s.io/v1/namespaces/default/events").await.body;
    assert_eq!(v1["kind"], "EventList");
    assert_eq!(v1["items"][0]["regarding"]["name"], "web");
}

#[tokio::test]
async fn an_events_k8s_io_note_over_1024_bytes_is_invalid() {
    let emu = emu();
    let ev = |note: String| {
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web.2"},
            "regarding": {"apiVersion": "v1", "kind": "Service", "name": "web", "namespace": "default"},
            "reason": "AllocationFailed", "note": note, "type": "Warning", "action": "Allocate",
            "reportingController": "ferrolb-controller", "reportingInstance": "c-0",
            "eventTime": "2026-01-01T00:00:00.000000Z"})
    };
    let r = post(&emu, "/apis/events.k8s.io/v1/namespaces/default/events", &ev("x".repeat(1025))).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["reason"], "Invalid");
    assert_eq!(r.body["details"]["causes"][0]["field"], "note");
    assert_eq!(r.body["details"]["causes"][0]["reason"], "FieldValueTooLong");
    assert!(
        r.body["message"].as_str().unwrap().contains("note: Too long: may not be more than 1024 bytes"),
        "{}",
        r.body
    );
    let ok = post(&emu, "/apis/events.k8s.io/v1/namespaces/default/events", &ev("x".repeat(1024))).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
}

#[tokio::test]
async fn pod_logs_come_from_the_configured_source_as_kubectl_logs_asks() {
    let source = ferrolb_emulator::PodLogs(std::sync::Arc::new(|ns: &str, pod: &str, c: Option<&str>| {
        (ns == "default" && pod == "web").then(|| format!("one {}\ntwo\nthree\n", c.unwrap_or("?")))
    }));
    let emu = Emulator::new(Config { pod_logs: Some(source), ..Config::default() });
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                     "spec": {"containers": [{"name": "app", "image": "x"}]}});
    assert_eq!(post(&emu, "/api/v1/namespaces/default/pods", &pod).await.status, 201);
    let r = get(&emu, "/api/v1/namespaces/default/pods/web/log").await;
    assert_eq!((r.status, r.body.as_str()), (200, Some("one app\ntwo\nthree\n")));
    assert_eq!(r.headers["content-type"], "text/plain");
    let r = get(&emu, "/api/v1/namespaces/default/pods/web/log?container=app&tailLines=1").await;
    assert_eq!(r.body.as_str(), Some("three\n"));
    let r = get(&emu, "/api/v1/namespaces/default/pods/web/log?container=nope").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(get(&emu, "/api/v1/namespaces/default/pods/gone/log").await.status, 404);
    assert_eq!(get(&emu, "/api/v1/namespaces/default/services/x/log").await.status, 404, "only Pods have logs");
}

#[tokio::test]
async fn secret_string_data_is_merged_into_data_and_not_stored() {
    let emu = emu();
    let secrets = "/api/v1/namespaces/default/secrets";
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"a": "b2xk", "keep": "eA=="}, "stringData": {"a": "new", "b": "two"}});
    let r = post(&emu, secrets, &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let got = get(&emu, &format!("{secrets}/s")).await.body;
    assert_eq!(got["data"], json!({"a": "bmV3", "b": "dHdv", "keep": "eA=="}), "stringData wins over data");
    assert!(got.get("stringData").is_none(), "stringData is write-only: {got}");
}

/// A version the server never reached (it lost its state): 504 "Too large resource
/// version", for a watch and for a list, as kube-apiserver answers.
#[tokio::test]
async fn a_version_from_the_future_is_too_large() {
    let emu = ferrolb_emulator::Emulator::new(Default::default());
    let current = emu.resource_version();
    for uri in [
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=99999",
        "/api/v1/namespaces/default/configmaps?resourceVersion=99999",
    ] {
        let r = common::call(&emu, "GET", uri, "", "").await;
        assert_eq!(r.status, 504, "{uri}: {}", r.body);
        assert_eq!(r.body["reason"], "Timeout");
        assert_eq!(r.body["message"], format!("Too large resource version: 99999, current: {current}"));
        assert_eq!(r.body["details"]["causes"][0]["reason"], "ResourceVersionTooLarge");
        assert_eq!(r.body["details"]["retryAfterSeconds"], 1);
        assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    }
}

#[tokio::test]
async fn the_scale_subresource_reads_and_writes_replicas() {
    let emu = emu();
    let base = "/apis/apps/v1/namespaces/default/deployments";
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert_eq!(post(&emu, base, &d).await.status, 201);
    let s = get(&emu, &format!("{base}/web/scale")).await;
    assert_eq!(s.status, 200);
    assert_eq!((s.body["kind"].clone(), s.body["apiVersion"].clone()), (json!("Scale"), json!("autoscaling/v1")));
    assert_eq!(
        (s.body["spec"]["replicas"].clone(), s.body["status"]["selector"].clone()),
        (json!(2), json!("app=web"))
    );
    // Replace (kubectl 1.20 reads, then writes the Scale back).
    let mut put_scale = s.body.clone();
    put_scale["spec"]["replicas"] = json!(3);
    let r = put(&emu, &format!("{base}/web/scale"), &put_scale).await;
    assert_eq!((r.status, r.body["spec"]["replicas"].clone()), (200, json!(3)), "{}", r.body);
    assert_eq!(get(&emu, &format!("{base}/web")).await.body["spec"]["replicas"], 3);
    // The same Scale again is stale now.
    let r = put(&emu, &format!("{base}/web/scale"), &put_scale).await;
    assert_eq!(r.status, 409, "{}", r.body);
    // Patch (kubectl 1.33), to zero.
    let r =
        patch(&emu, &format!("{base}/web/scale"), "application/merge-patch+json", &json!({"spec": {"replicas": 0}}))
            .await;
    assert_eq!((r.status, r.body["spec"]["replicas"].clone()), (200, json!(0)));
    assert_eq!(get(&emu, &format!("{base}/web")).await.body["spec"]["replicas"], 0);
    let r =
        patch(&emu, &format!("{base}/web/scale"), "application/merge-patch+json", &json!({"spec": {"replicas": -1}}))
            .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("spec.replicas"), "{}", r.body);
    // Only where upstream serves it, and in discovery.
    assert_eq!(get(&emu, "/apis/apps/v1/namespaces/default/daemonsets/x/scale").await.status, 404);
    let disc = get(&emu, "/apis/apps/v1").await.body;
    let scale = disc["resources"].as_array().unwrap().iter().find(|r| r["name"] == "deployments/scale").cloned();
    assert_eq!(scale.map(|s| (s["group"].clone(), s["kind"].clone())), Some((json!("autoscaling"), json!("Scale"))));
}
