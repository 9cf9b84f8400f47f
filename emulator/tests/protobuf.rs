//! `application/vnd.kubernetes.protobuf`, checked against a protobuf implementation the
//! emulator does not share: the `k8s-pb` crate's prost-generated types write the bodies
//! and read the answers, lists and watch streams.

use std::collections::BTreeMap;

use axum::body::Body;
use ferrolb_emulator::Emulator;
use http_body_util::BodyExt;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::{get, post};

const PB: &str = "application/vnd.kubernetes.protobuf";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn emu() -> Emulator {
    Emulator::new(ferrolb_emulator::Config::default())
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\x00".to_vec();
    out.extend(u.encode_to_vec());
    out
}

fn open(body: &[u8]) -> Unknown {
    let rest = body.strip_prefix(b"k8s\x00").expect("protobuf magic");
    Unknown::decode(rest).expect("a runtime.Unknown")
}

struct Raw {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

async fn send(emu: &Emulator, method: &str, uri: &str, content_type: &str, accept: &str, body: Vec<u8>) -> Raw {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header("accept", accept)
        .body(Body::from(body))
        .unwrap();
    let resp = emu.router().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Raw { status, content_type, body }
}

fn deployment(name: &str) -> apps::Deployment {
    let labels: BTreeMap<String, String> = [("app".to_string(), name.to_string())].into();
    apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some(name.into()),
            labels: labels.clone(),
            // What Go writes for a non-pointer field left empty.
            generate_name: Some(String::new()),
            creation_timestamp: Some(meta::Time { seconds: Some(0), nanos: Some(0) }),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            // A pointer set to zero: scaled to nothing, not defaulted to one.
            replicas: Some(0),
            selector: Some(meta::LabelSelector { match_labels: labels.clone(), ..Default::default() }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString { r#type: Some(0), int_val: Some(1), str_val: None }),
                    max_surge: Some(IntOrString { r#type: Some(1), int_val: None, str_val: Some("25%".into()) }),
                }),
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta { labels, ..Default::default() }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("hello".into()),
                        image: Some("registry.example/hello:1".into()),
                        ports: vec![core::ContainerPort {
                            container_port: Some(8080),
                            host_ip: Some("198.51.100.7".into()),
                            host_port: Some(0),
                            ..Default::default()
                        }],
                        resources: Some(core::ResourceRequirements {
                            limits: [("cpu".to_string(), Quantity { string: Some("500m".into()) })].into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[test]
fn the_schema_is_what_the_generator_writes_from_the_locked_crates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/gen-protobuf-schema"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn an_object_written_in_protobuf_is_stored_as_kube_apiserver_writes_its_json() {
    let emu = emu();
    let body = envelope("apps/v1", "Deployment", deployment("hello").encode_to_vec());
    let r = send(&emu, "POST", DEPLOYMENTS, PB, "application/json", body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let d = get(&emu, &format!("{DEPLOYMENTS}/hello")).await.body;
    assert_eq!(d["spec"]["replicas"], 0, "a pointer's zero is kept: {d}");
    assert_eq!(d["metadata"]["labels"], json!({"app": "hello"}));
    assert!(d["metadata"].get("generateName").is_none(), "Go's empty string is no value: {d}");
    assert!(d["metadata"]["creationTimestamp"].is_string(), "the server's own time, not the zero Time: {d}");
    assert_eq!(d["spec"]["selector"], json!({"matchLabels": {"app": "hello"}}));
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"], json!({"maxUnavailable": 1, "maxSurge": "25%"}));
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"], json!([{"containerPort": 8080, "hostIP": "198.51.100.7"}]), "JSON names, not prost's");
    assert_eq!(c["resources"], json!({"limits": {"cpu": "500m"}}));
}

#[tokio::test]
async fn a_client_that_prefers_protobuf_reads_objects_lists_and_watches_in_it() {
    let emu = emu();
    let sent = deployment("hello");
    let body = envelope("apps/v1", "Deployment", sent.encode_to_vec());
    let r = send(&emu, "POST", DEPLOYMENTS, PB, &format!("{PB},application/json"), body).await;
    assert_eq!((r.status, r.content_type.as_str()), (201, PB));

    // One object.
    let r = send(&emu, "GET", &format!("{DEPLOYMENTS}/hello"), PB, &format!("{PB}, application/json"), vec![]).await;
    assert_eq!((r.status, r.content_type.as_str()), (200, PB));
    let u = open(&r.body);
    assert_eq!(u.type_meta.as_ref().and_then(|t| t.kind.as_deref()), Some("Deployment"));
    let got = apps::Deployment::decode(u.raw.as_deref().unwrap()).unwrap();
    let meta = got.metadata.as_ref().unwrap();
    assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
    assert!(meta.creation_timestamp.as_ref().and_then(|t| t.seconds).is_some_and(|s| s > 0));
    let (mut want_spec, got_spec) = (sent.spec.clone().unwrap(), got.spec.clone().unwrap());
    // The zero hostPort is Go's default: written as absent.
    want_spec.template.as_mut().unwrap().spec.as_mut().unwrap().containers[0].ports[0].host_port = None;
    // The server's defaults for what was not sent.
    (want_spec.revision_history_limit, want_spec.progress_deadline_seconds) = (Some(10), Some(600));
    assert_eq!(got_spec, want_spec);

    // A list, as the list kind.
    let r = send(&emu, "GET", DEPLOYMENTS, PB, PB, vec![]).await;
    assert_eq!((r.status, r.content_type.as_str()), (200, PB));
    let u = open(&r.body);
    assert_eq!(u.type_meta.as_ref().and_then(|t| t.kind.as_deref()), Some("DeploymentList"));
    let list = apps::DeploymentList::decode(u.raw.as_deref().unwrap()).unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.and_then(|m| m.resource_version).is_some_and(|rv| !rv.is_empty()));

    // A watch: length-prefixed WatchEvents, each object enveloped.
    let req = http::Request::builder()
        .uri(format!("{DEPLOYMENTS}?watch=true&timeoutSeconds=5"))
        .header("accept", PB)
        .body(Body::empty())
        .unwrap();
    let resp = emu.router().oneshot(req).await.unwrap();
    assert_eq!(resp.headers().get("content-type").unwrap(), "application/vnd.kubernetes.protobuf;stream=watch");
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut frame = async || loop {
        if buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() >= 4 + len {
                let ev = meta::WatchEvent::decode(&buf[4..4 + len]).unwrap();
                buf.drain(..4 + len);
                return ev;
            }
        }
        let f = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await.unwrap();
        buf.extend_from_slice(&f.unwrap().unwrap().into_data().unwrap());
    };
    let added = frame().await;
    assert_eq!(added.r#type.as_deref(), Some("ADDED"));
    let patch = json!({"metadata": {"labels": {"tier": "web"}}});
    let r = common::patch(&emu, &format!("{DEPLOYMENTS}/hello"), "application/merge-patch+json", &patch).await;
    assert_eq!(r.status, 200);
    let modified = frame().await;
    assert_eq!(modified.r#type.as_deref(), Some("MODIFIED"));
    let u = open(modified.object.unwrap().raw.as_deref().unwrap());
    let d = apps::Deployment::decode(u.raw.as_deref().unwrap()).unwrap();
    assert_eq!(d.metadata.unwrap().labels.get("tier").map(String::as_str), Some("web"));
}

#[tokio::test]
async fn json_stays_the_answer_where_protobuf_has_no_form_or_was_not_asked_for() {
    let emu = emu();
    common::post(&emu, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &common::pool_crd()).await;
    let pools = "/apis/ferrolb.io/v1beta1/namespaces/default/ipaddresspools";
    let r = send(&emu, "GET", pools, PB, &format!("{PB},application/json"), vec![]).await;
    assert_eq!((r.status, r.content_type.as_str()), (200, "application/json"), "custom resources are JSON");
    let r = send(&emu, "GET", "/api/v1/namespaces", PB, "application/json", vec![]).await;
    assert_eq!(r.content_type, "application/json");
    let r = send(&emu, "GET", "/api/v1/namespaces", PB, &format!("application/json,{PB};q=0.5"), vec![]).await;
    assert_eq!(r.content_type, "application/json", "the higher q wins");
}

fn status_of(r: &Raw) -> Value {
    assert_eq!(r.content_type, "application/json", "errors are JSON Status objects");
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn bad_protobuf_bodies_get_status_errors_naming_the_problem() {
    let emu = emu();
    let good = envelope("apps/v1", "Deployment", deployment("d").encode_to_vec());
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("truncated", good[..good.len() - 9].to_vec(), 400, "error decoding protobuf body"),
        ("no magic", good[4..].to_vec(), 400, "magic"),
        ("custom kind", envelope("ferrolb.io/v1beta1", "IPAddressPool", vec![]), 400, "IPAddressPool"),
        ("no kind", envelope("apps/v1", "", vec![]), 400, "no kind"),
        ("a string where a message is", envelope("apps/v1", "Deployment", vec![0x12, 0x01, 0x08]), 400, "error"),
        ("wrong wire type", envelope("apps/v1", "Deployment", vec![0x10, 0x01]), 400, "wrong wire type"),
    ];
    for (what, body, code, says) in cases {
        let r = send(&emu, "POST", DEPLOYMENTS, PB, "application/json", body).await;
        let s = status_of(&r);
        assert_eq!(r.status, code, "{what}: {s}");
        assert_eq!(s["kind"], "Status", "{what}");
        assert!(s["message"].as_str().unwrap().contains(says), "{what}: {s}");
    }
    // A kind the URL does not serve.
    let svc = envelope("v1", "Service", core::Service::default().encode_to_vec());
    let r = send(&emu, "POST", DEPLOYMENTS, PB, "application/json", svc).await;
    assert_eq!(r.status, 400, "{}", status_of(&r));
    // Nested deeper than any object: refused, not a stack overflow.
    let mut deep = Vec::new();
    for _ in 0..10_000 {
        let mut outer = vec![0x12];
        prost::encoding::encode_varint(deep.len() as u64, &mut outer);
        outer.extend(deep);
        deep = outer;
    }
    let r = send(&emu, "POST", DEPLOYMENTS, PB, "application/json", envelope("apps/v1", "Deployment", deep)).await;
    assert_eq!(r.status, 400, "{}", status_of(&r));
    assert_eq!(get(&emu, DEPLOYMENTS).await.body["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn random_and_mutated_protobuf_bodies_never_break_the_server() {
    let emu = emu();
    let good = envelope("apps/v1", "Deployment", deployment("d").encode_to_vec());
    let mut seed = 0x5eed_f00d_u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    let mut codes = BTreeMap::new();
    for i in 0..3000 {
        let mut body = good.clone();
        match next(4) {
            0 => body.truncate(next(body.len())),
            1 => {
                for _ in 0..1 + next(4) {
                    let at = 4 + next(body.len() - 4);
                    body[at] = next(256) as u8;
                }
            }
            2 => {
                let at = 4 + next(body.len() - 4);
                let junk: Vec<u8> = (0..next(16)).map(|_| next(256) as u8).collect();
                body.splice(at..at, junk);
            }
            _ => body = (0..next(64)).map(|_| next(256) as u8).collect(),
        }
        let r = send(&emu, "POST", DEPLOYMENTS, PB, "application/json", body).await;
        assert!(r.status < 500, "body {i}: {}", String::from_utf8_lossy(&r.body));
        if r.status >= 400 {
            let s = status_of(&r);
            assert_eq!(s["kind"], "Status", "body {i}");
            assert!(!s["message"].as_str().unwrap_or("").is_empty(), "body {i}");
        } else {
            // Whatever was stored is read back by both encodings.
            let name = serde_json::from_slice::<Value>(&r.body).unwrap()["metadata"]["name"].clone();
            let uri = format!("{DEPLOYMENTS}/{}", name.as_str().unwrap());
            let back = send(&emu, "GET", &uri, PB, PB, vec![]).await;
            assert_eq!(back.status, 200, "body {i}");
            let _ = common::delete(&emu, &uri).await;
        }
        *codes.entry(r.status).or_insert(0) += 1;
    }
    assert!(codes.keys().any(|c| *c >= 400) && codes.keys().any(|c| *c < 300), "both outcomes: {codes:?}");
    let after = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "after"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert_eq!(post(&emu, DEPLOYMENTS, &after).await.status, 201, "the server still serves");
}
