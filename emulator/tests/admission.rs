//! Validating admission webhooks as kube-apiserver calls them: a real HTTPS webhook
//! in this test, reached through a Service's EndpointSlice or a URL, its certificate
//! checked against the caBundle, AdmissionReview v1 both ways, denials and warnings
//! as kubectl shows them, objectSelector, failurePolicy and timeoutSeconds.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use common::call;
use ferrolb_emulator::{Config, Emulator, ServingCert, write_kubeconfig_full};
use serde_json::{Value, json};

/// What the test webhook saw: (operation, name, had an oldObject).
type Seen = Arc<Mutex<Vec<(String, String, bool)>>>;

/// A webhook for ConfigMaps: denies `data.bad`, warns on `data.note`; `/slow` answers after 3 s.
async fn webhook(cert: &ServingCert) -> (std::net::SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let review = move |body: axum::body::Bytes| {
        let s = s.clone();
        async move {
            let r: Value = serde_json::from_slice(&body).unwrap_or_default();
            let req = &r["request"];
            let obj = if req["object"].is_null() { &req["oldObject"] } else { &req["object"] };
            s.lock().unwrap().push((
                req["operation"].as_str().unwrap_or_default().into(),
                obj["metadata"]["name"].as_str().unwrap_or_default().into(),
                !req["oldObject"].is_null(),
            ));
            let mut resp = json!({"uid": req["uid"], "allowed": true});
            if obj["data"].get("bad").is_some() {
                resp = json!({"uid": req["uid"], "allowed": false, "status": {"code": 422, "message": "data.bad: not allowed here"}});
            } else if obj["data"].get("note").is_some() {
                resp["warnings"] = json!(["data.note is deprecated"]);
            }
            reply(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}))
        }
    };
    let slow = |body: axum::body::Bytes| async move {
        let r: Value = serde_json::from_slice(&body).unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(3)).await;
        reply(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": r["request"]["uid"], "allowed": true}}),
        )
    };
    let app = axum::Router::new().route("/review", post(review)).route("/slow", post(slow));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn reply(v: Value) -> ([(http::header::HeaderName, &'static str); 1], String) {
    ([(http::header::CONTENT_TYPE, "application/json")], v.to_string())
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn hook(name: &str, client_config: Value, extra: Value) -> Value {
    let mut h = json!({
        "name": name, "clientConfig": client_config, "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"]}],
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        h[k] = v.clone();
    }
    h
}

async fn configure(emu: &Emulator, name: &str, hooks: Vec<Value>) {
    let body = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name}, "webhooks": hooks});
    let r = call(
        emu,
        "POST",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        "application/json",
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

async fn remove(emu: &Emulator, name: &str) {
    let uri = format!("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}");
    assert_eq!(call(emu, "DELETE", &uri, "application/json", "").await.status, 200);
}

async fn create_cm(emu: &Emulator, name: &str, data: Value, labels: Value) -> common::Resp {
    let body =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": data});
    call(emu, "POST", "/api/v1/namespaces/default/configmaps", "application/json", body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_review_writes_as_the_real_server_calls_them() {
    let emu = Emulator::new(Config::default());
    let cert = ServingCert::generate(&["hook.default.svc", "127.0.0.1"]).unwrap();
    let (addr, seen) = webhook(&cert).await;
    // A Service in front of the webhook, and its endpoint (an endpoints controller's job).
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": addr.port()}]}});
    let r = call(&emu, "POST", "/api/v1/namespaces/default/services", "application/json", svc.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "hook-1", "labels": {"kubernetes.io/service-name": "hook"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]});
    let r = call(
        &emu,
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        "application/json",
        slice.to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let by_service =
        json!({"service": {"namespace": "default", "name": "hook", "path": "/review"}, "caBundle": b64(&cert.ca_pem)});
    configure(
        &emu,
        "cm",
        vec![hook(
            "cm.test.ferrolb.io",
            by_service.clone(),
            json!({"objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]}}),
        )],
    )
    .await;

    // Allowed, with the webhook's warning as a Warning header.
    let r = create_cm(&emu, "good", json!({"note": "x"}), json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let warnings: Vec<_> = r.headers.get_all("warning").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert_eq!(warnings, ["299 - \"data.note is deprecated\""]);

    // Denied: the webhook's code, upstream's message, nothing stored.
    let r = create_cm(&emu, "bad", json!({"bad": "1"}), json!({})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.body["message"],
        "admission webhook \"cm.test.ferrolb.io\" denied the request: data.bad: not allowed here"
    );
    assert_eq!(call(&emu, "GET", "/api/v1/namespaces/default/configmaps/bad", "", "").await.status, 404);

    // An update is reviewed with its old object, and refused leaves the object as it was.
    let patch = json!({"data": {"bad": "2"}}).to_string();
    let r =
        call(&emu, "PATCH", "/api/v1/namespaces/default/configmaps/good", "application/merge-patch+json", patch).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let good = call(&emu, "GET", "/api/v1/namespaces/default/configmaps/good", "", "").await;
    assert!(good.body["data"].get("bad").is_none());
    assert!(seen.lock().unwrap().contains(&("UPDATE".into(), "good".into(), true)));

    // objectSelector: labelled `skip`, the webhook is not asked.
    let asked = seen.lock().unwrap().len();
    let r = create_cm(&emu, "skipped", json!({"bad": "1"}), json!({"skip": "yes"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(seen.lock().unwrap().len(), asked);
    // Rules: Secrets are not configmaps.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"bad": b64("1")}});
    let r = call(&emu, "POST", "/api/v1/namespaces/default/secrets", "application/json", secret.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // kubectl shows the denial and the warning as against a real server.
    let dir = tempfile::tempdir().unwrap();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api.local_addr().unwrap();
    let api_cert = ServingCert::generate(&["127.0.0.1"]).unwrap();
    let (e, c) = (emu.clone(), api_cert.clone());
    tokio::spawn(async move { e.serve_tls(api, &c).await });
    let kc = dir.path().join("kubeconfig");
    write_kubeconfig_full(&kc, &format!("https://{api_addr}"), Some(&api_cert.ca_pem), Some("t")).unwrap();
    // `kubectl apply`: `create configmap` would send protobuf, which the emulator does not read.
    let apply = move |manifest: Value| {
        let kc = kc.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut child = Command::new("kubectl")
                    .env("KUBECONFIG", kc)
                    .args(["apply", "-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(manifest.to_string().as_bytes()).unwrap();
                child.wait_with_output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    let cm = |name: &str, data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": data});
    let out = apply(cm("viakubectl", json!({"bad": "1"}))).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admission webhook \"cm.test.ferrolb.io\" denied the request: data.bad: not allowed here"),
        "{err}"
    );
    let out = apply(cm("noted", json!({"note": "1"}))).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Warning: data.note is deprecated"));
    remove(&emu, "cm").await;

    // A caBundle of another CA: the handshake fails; Fail refuses the write, Ignore lets it through.
    let stranger = ServingCert::generate(&["hook.default.svc"]).unwrap();
    let wrong_ca = json!({"service": {"namespace": "default", "name": "hook", "path": "/review"}, "caBundle": b64(&stranger.ca_pem)});
    configure(&emu, "strict", vec![hook("strict.test.ferrolb.io", wrong_ca.clone(), json!({}))]).await;
    let r = create_cm(&emu, "c1", json!({}), json!({})).await;
    assert_eq!(r.status, 500, "{}", r.body);
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Internal error occurred: failed calling webhook \"strict.test.ferrolb.io\": failed to call webhook: Post \"https://hook.default.svc:443/review?timeout=10s\": tls: failed to verify certificate"),
        "{msg}"
    );
    remove(&emu, "strict").await;
    configure(&emu, "lenient", vec![hook("lenient.test.ferrolb.io", wrong_ca, json!({"failurePolicy": "Ignore"}))])
        .await;
    assert_eq!(create_cm(&emu, "c2", json!({}), json!({})).await.status, 201);
    remove(&emu, "lenient").await;

    // No endpoint behind the Service, and a webhook slower than its timeout.
    let nobody = json!({"service": {"namespace": "default", "name": "absent"}, "caBundle": b64(&cert.ca_pem)});
    configure(&emu, "nobody", vec![hook("nobody.test.ferrolb.io", nobody, json!({}))]).await;
    let r = create_cm(&emu, "c3", json!({}), json!({})).await;
    assert!(r.body["message"].as_str().unwrap().contains("service \"absent\" not found"), "{}", r.body);
    remove(&emu, "nobody").await;
    let slow = json!({"url": format!("https://127.0.0.1:{}/slow", addr.port()), "caBundle": b64(&cert.ca_pem)});
    configure(&emu, "slow", vec![hook("slow.test.ferrolb.io", slow, json!({"timeoutSeconds": 1}))]).await;
    let t0 = std::time::Instant::now();
    let r = create_cm(&emu, "c4", json!({}), json!({})).await;
    assert!(r.body["message"].as_str().unwrap().ends_with("context deadline exceeded"), "{}", r.body);
    assert!(t0.elapsed() < Duration::from_secs(3), "gave up at the timeout");
    remove(&emu, "slow").await;
}

#[tokio::test]
async fn webhook_configurations_are_validated_and_defaulted() {
    let emu = Emulator::new(Config::default());
    let mut bad = hook("short.name", json!({"url": "http://127.0.0.1/x"}), json!({"timeoutSeconds": 31}));
    bad.as_object_mut().unwrap().remove("sideEffects");
    let body = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "bad"}, "webhooks": [bad]});
    let uri = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
    let r = call(&emu, "POST", uri, "application/json", body.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let msg = r.body["message"].as_str().unwrap();
    for field in
        ["webhooks[0].name", "webhooks[0].sideEffects", "webhooks[0].timeoutSeconds", "webhooks[0].clientConfig.url"]
    {
        assert!(msg.contains(field), "{field} in {msg}");
    }
    let ok = hook("ok.test.ferrolb.io", json!({"service": {"namespace": "default", "name": "x"}}), json!({}));
    let body = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "ok"}, "webhooks": [ok]});
    let r = call(&emu, "POST", uri, "application/json", body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let w = &r.body["webhooks"][0];
    assert_eq!((w["failurePolicy"].as_str(), w["timeoutSeconds"].as_i64()), (Some("Fail"), Some(10)));
    assert_eq!(w["clientConfig"]["service"]["port"], 443);
}
