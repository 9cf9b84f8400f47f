//! Validating admission webhooks, called the way kube-apiserver calls them.
//!
//! After a write has passed the server's own validation (and before it is stored),
//! every `ValidatingWebhookConfiguration` webhook whose `rules`, `namespaceSelector`
//! and `objectSelector` match the request gets an `admission.k8s.io/v1`
//! `AdmissionReview` over HTTPS, the server's certificate verified against the
//! webhook's `caBundle` for the name `<service>.<namespace>.svc`. A denial comes
//! back to the client as the real server phrases it (`admission webhook "NAME"
//! denied the request: ...`), `warnings` as `Warning` headers; a webhook that cannot
//! be reached fails the request (`failurePolicy: Fail`, the default) or is skipped
//! (`Ignore`), after at most `timeoutSeconds`.
//!
//! A `service` reference is resolved to a ready endpoint of the Service's
//! EndpointSlices (kube-apiserver dials the ClusterIP, which needs a kube-proxy the
//! emulator does not have; with `--enable-aggregator-routing` it does the same).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::error::{ApiError, ApiResult, FieldError};
use crate::store::{State, Target};

/// Opens the TCP connection for a webhook call (where the API server's network is).
pub type DialFn = dyn Fn(SocketAddr) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>> + Send + Sync;

/// How the emulator reaches webhooks: plain `connect` unless the embedder says
/// otherwise (the sandbox dials from its control plane's network namespace).
#[derive(Clone)]
pub struct Dialer(pub Arc<DialFn>);

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer(..)")
    }
}

/// The operation under review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// One webhook to call for a request.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    name: String,
    /// The URL as the real server would print it in an error.
    url: String,
    /// Where to connect, or why there is nowhere.
    addr: Result<SocketAddr, String>,
    /// The name the serving certificate must carry.
    server_name: String,
    /// Path and query of the POST.
    path: String,
    ca: Vec<u8>,
    timeout: Duration,
    fail_closed: bool,
}

const GROUP: &str = "admissionregistration.k8s.io";
const PLURAL: &str = "validatingwebhookconfigurations";

/// Whether any webhook's rules name `t`'s resource for one of `ops`, before the
/// object is known: most writes (Services, Leases, Events) skip the dry run.
pub(crate) fn may_apply(st: &State, t: &Target, ops: &[Operation]) -> bool {
    if t.rt.group == GROUP {
        return false;
    }
    let resource = resource_of(t);
    st.stored(GROUP, PLURAL).any(|cfg| {
        cfg["webhooks"].as_array().into_iter().flatten().any(|wh| {
            let rules = wh["rules"].as_array().into_iter().flatten();
            rules.into_iter().any(|r| ops.iter().any(|op| rule_matches(r, t, &resource, *op)))
        })
    })
}

/// The webhooks that apply to an operation on `t`, with `object` the object as it would
/// be stored (Null for a delete) and `old` the stored one (Null for a create).
pub(crate) fn calls(st: &State, t: &Target, op: Operation, object: &Value, old: &Value) -> Vec<Call> {
    // As upstream: webhook configurations themselves are never sent to webhooks.
    if t.rt.group == GROUP {
        return Vec::new();
    }
    let ns = t.namespace.clone().filter(|_| t.rt.namespaced).unwrap_or_default();
    let resource = resource_of(t);
    let mut out = Vec::new();
    for cfg in st.stored(GROUP, PLURAL) {
        for wh in cfg["webhooks"].as_array().into_iter().flatten() {
            let rules = wh["rules"].as_array().into_iter().flatten();
            let ruled = rules.into_iter().any(|r| rule_matches(r, t, &resource, op));
            if !ruled {
                continue;
            }
            if t.rt.namespaced {
                let ns_labels = st.stored_one("", "namespaces", "", &ns).map(|n| n["metadata"]["labels"].clone());
                if !selector_matches(&wh["namespaceSelector"], &ns_labels.unwrap_or(Value::Null)) {
                    continue;
                }
            } else if (t.rt.group.as_str(), t.rt.plural.as_str()) == ("", "namespaces")
                && !selector_matches(&wh["namespaceSelector"], labels_of(object, old))
            {
                continue;
            }
            let os = &wh["objectSelector"];
            let by_object =
                [object, old].iter().filter(|o| !o.is_null()).any(|o| selector_matches(os, &o["metadata"]["labels"]));
            if !by_object {
                continue;
            }
            out.push(resolve(st, wh));
        }
    }
    out
}

/// `plural` or `plural/subresource`, as rules name resources.
pub(crate) fn resource_of(t: &Target) -> String {
    match &t.subresource {
        Some(s) => format!("{}/{s}", t.rt.plural),
        None => t.rt.plural.clone(),
    }
}

fn labels_of<'a>(object: &'a Value, old: &'a Value) -> &'a Value {
    if object.is_null() { &old["metadata"]["labels"] } else { &object["metadata"]["labels"] }
}

fn listed(list: &Value, want: &str) -> bool {
    list.as_array().into_iter().flatten().filter_map(|v| v.as_str()).any(|v| v == "*" || v == want)
}

/// A rule (`RuleWithOperations`, or a policy's `NamedRuleWithOperations` with
/// `resourceNames`) against the request.
pub(crate) fn rule_matches(r: &Value, t: &Target, resource: &str, op: Operation) -> bool {
    let scope_ok = match r["scope"].as_str().unwrap_or("*") {
        "Cluster" => !t.rt.namespaced,
        "Namespaced" => t.rt.namespaced,
        _ => true,
    };
    let resource_ok = r["resources"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).any(|want| {
        let (wr, ws) = want.split_once('/').unwrap_or((want, ""));
        let (gr, gs) = resource.split_once('/').unwrap_or((resource, ""));
        (wr == "*" || wr == gr) && (ws == gs || (ws == "*" && !gs.is_empty()) || (want == "*/*"))
    });
    let names = r["resourceNames"].as_array().filter(|a| !a.is_empty());
    let name_ok = names.is_none_or(|n| t.name.as_deref().is_some_and(|x| n.iter().any(|v| v == x)));
    scope_ok
        && resource_ok
        && name_ok
        && listed(&r["apiGroups"], &t.rt.group)
        && listed(&r["apiVersions"], &t.version)
        && listed(&r["operations"], op.as_str())
}

/// A `metav1.LabelSelector` (JSON) against labels; the empty or absent selector matches all.
pub(crate) fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(|v| v.as_str());
    let by_labels = sel["matchLabels"].as_object().into_iter().flatten().all(|(k, v)| get(k) == v.as_str());
    let by_exprs = sel["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        match e["operator"].as_str().unwrap_or_default() {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        }
    });
    by_labels && by_exprs
}

fn resolve(st: &State, wh: &Value) -> Call {
    use base64::Engine;
    let name = wh["name"].as_str().unwrap_or_default().to_string();
    let ca =
        base64::engine::general_purpose::STANDARD.decode(wh["clientConfig"]["caBundle"].as_str().unwrap_or_default());
    let timeout = Duration::from_secs(wh["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30));
    let fail_closed = wh["failurePolicy"].as_str() != Some("Ignore");
    let query = format!("?timeout={}s", timeout.as_secs());
    let mut call = Call {
        name,
        url: String::new(),
        addr: Err(String::new()),
        server_name: String::new(),
        path: String::new(),
        ca: ca.unwrap_or_default(),
        timeout,
        fail_closed,
    };
    let svc = &wh["clientConfig"]["service"];
    if let Some(url) = wh["clientConfig"]["url"].as_str() {
        let rest = url.strip_prefix("https://").unwrap_or(url);
        let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (h, p.parse().unwrap_or(443)),
            _ => (hostport, 443),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        call.url = format!("{url}{query}");
        call.server_name = host.to_string();
        call.path = format!("{path}{query}");
        call.addr = host
            .parse()
            .map(|ip| SocketAddr::new(ip, port))
            .map_err(|_| format!("dial tcp: lookup {host}: the emulator resolves no names, give an IP"));
        return call;
    }
    let ns = svc["namespace"].as_str().unwrap_or_default();
    let sname = svc["name"].as_str().unwrap_or_default();
    let port = svc["port"].as_u64().unwrap_or(443);
    let path = svc["path"].as_str().unwrap_or("/");
    call.server_name = format!("{sname}.{ns}.svc");
    call.url = format!("https://{sname}.{ns}.svc:{port}{path}{query}");
    call.path = format!("{path}{query}");
    call.addr = endpoint(st, ns, sname, port);
    call
}

/// A ready endpoint of Service `ns/name` for its port `port`.
fn endpoint(st: &State, ns: &str, name: &str, port: u64) -> Result<SocketAddr, String> {
    let svc = st.stored_one("", "services", ns, name).ok_or_else(|| format!("service \"{name}\" not found"))?;
    let sp = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(port))
        .ok_or_else(|| format!("service {ns}/{name} has no port {port}"))?;
    let port_name = sp["name"].as_str().unwrap_or_default();
    for slice in st.stored("discovery.k8s.io", "endpointslices") {
        if slice["metadata"]["namespace"].as_str() != Some(ns)
            || slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str() != Some(name)
        {
            continue;
        }
        let Some(target) = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        let ready = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["conditions"]["ready"].as_bool() != Some(false))
            .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
            .filter_map(|a| a.as_str()?.parse().ok())
            .next();
        if let Some(ip) = ready {
            return Ok(SocketAddr::new(ip, target));
        }
    }
    Err(format!("no endpoints available for service \"{name}\""))
}

/// The request half of an `AdmissionReview`, without the uid (each call gets its own).
#[allow(clippy::too_many_arguments)]
pub(crate) fn request(
    t: &Target,
    op: Operation,
    name: &str,
    object: &Value,
    old: &Value,
    user: Option<&crate::auth::User>,
    dry_run: bool,
    field_manager: &str,
) -> Value {
    let options_kind = match op {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        Operation::Delete => "DeleteOptions",
    };
    let kind = json!({"group": t.rt.group, "version": t.version, "kind": t.rt.kind});
    let resource = json!({"group": t.rt.group, "version": t.version, "resource": t.rt.plural});
    let mut r = json!({
        "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
        "name": name, "operation": op.as_str(),
        "userInfo": user.map(|u| json!({"username": u.name, "groups": u.groups, "extra": u.extra})).unwrap_or_else(|| json!({"username": "system:apiserver", "groups": ["system:masters"], "extra": {}})),
        "object": object, "oldObject": old, "dryRun": dry_run,
        "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1", "fieldManager": field_manager},
    });
    if t.rt.namespaced {
        r["namespace"] = json!(t.namespace.clone().unwrap_or_default());
    }
    if let Some(s) = &t.subresource {
        r["subResource"] = json!(s);
        r["requestSubResource"] = json!(s);
    }
    r
}

/// Call every webhook in parallel; the warnings of all, or the first refusal.
pub(crate) async fn review(calls: Vec<Call>, request: &Value, dialer: Option<&Dialer>) -> ApiResult<Vec<String>> {
    let outcomes = futures::future::join_all(calls.iter().map(|c| call(c, request, dialer))).await;
    let mut warnings = Vec::new();
    for (c, outcome) in calls.iter().zip(outcomes) {
        match outcome {
            Ok(Verdict { allowed: true, warnings: w, .. }) => warnings.extend(w),
            Ok(Verdict { status, warnings: w, .. }) => {
                warnings.extend(w);
                return Err(denied(&c.name, &status));
            }
            Err(why) if c.fail_closed => {
                return Err(ApiError::internal(format!(
                    "Internal error occurred: failed calling webhook \"{}\": {why}",
                    c.name
                )));
            }
            Err(why) => {
                tracing::warn!(webhook = %c.name, error = %why, "webhook call failed; ignored (failurePolicy: Ignore)");
            }
        }
    }
    Ok(warnings)
}

struct Verdict {
    allowed: bool,
    status: Value,
    warnings: Vec<String>,
}

/// The error a denial becomes, as upstream's `webhookerrors.ToStatusErr`.
fn denied(name: &str, status: &Value) -> ApiError {
    let by = format!("admission webhook \"{name}\" denied the request");
    let message = match (status["message"].as_str(), status["reason"].as_str()) {
        (Some(m), _) if !m.is_empty() => format!("{by}: {m}"),
        (_, Some(r)) if !r.is_empty() => format!("{by}: {r}"),
        _ => format!("{by} without explanation"),
    };
    let code = status["code"].as_u64().and_then(|c| u16::try_from(c).ok()).filter(|c| *c >= 400).unwrap_or(400);
    let reason = match status["reason"].as_str().unwrap_or_default() {
        "Forbidden" => "Forbidden",
        "Invalid" => "Invalid",
        "BadRequest" => "BadRequest",
        "Conflict" => "Conflict",
        "NotFound" => "NotFound",
        "AlreadyExists" => "AlreadyExists",
        _ => "",
    };
    let mut e = ApiError::forbidden(message);
    e.code = code;
    e.reason = reason;
    e
}

async fn call(c: &Call, request: &Value, dialer: Option<&Dialer>) -> Result<Verdict, String> {
    let uid = uuid::Uuid::new_v4().to_string();
    let mut req = request.clone();
    req["uid"] = json!(uid);
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req});
    let post = format!("failed to call webhook: Post \"{}\"", c.url);
    let body = match tokio::time::timeout(c.timeout, post_json(c, review.to_string(), dialer)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(format!("{post}: {e}")),
        Err(_) => return Err(format!("{post}: context deadline exceeded")),
    };
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("received invalid webhook response: {e}"))?;
    if v["apiVersion"].as_str() != Some("admission.k8s.io/v1") || v["kind"].as_str() != Some("AdmissionReview") {
        return Err(format!(
            "received invalid webhook response: expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}",
            v["apiVersion"].as_str().unwrap_or_default(),
            v["kind"].as_str().unwrap_or_default()
        ));
    }
    let resp = &v["response"];
    if resp["uid"].as_str() != Some(uid.as_str()) {
        return Err(format!(
            "received invalid webhook response: expected response.uid=\"{uid}\", got \"{}\"",
            resp["uid"].as_str().unwrap_or_default()
        ));
    }
    Ok(Verdict {
        allowed: resp["allowed"].as_bool().unwrap_or(false),
        status: resp["status"].clone(),
        warnings: resp["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(String::from))
            .collect(),
    })
}

async fn post_json(c: &Call, body: String, dialer: Option<&Dialer>) -> Result<Bytes, String> {
    let addr = c.addr.clone()?;
    let tcp = match dialer {
        Some(d) => (d.0)(addr).await,
        None => TcpStream::connect(addr).await,
    }
    .map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&c.ca).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(c.server_name.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: failed to verify certificate: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post(c.path.as_str())
        .header(http::header::HOST, c.server_name.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("expected 200 from the webhook, got {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(bytes)
}

/// Validate and default a `ValidatingWebhookConfiguration` as the real server does.
pub(crate) fn prepare(obj: &mut Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    let Some(hooks) = obj["webhooks"].as_array_mut() else { return errs };
    for (i, wh) in hooks.iter_mut().enumerate() {
        let at = |f: &str| format!("webhooks[{i}].{f}");
        let name = wh["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() {
            errs.push(FieldError::required(at("name"), ""));
        } else if name.split('.').count() < 3 {
            errs.push(FieldError::invalid(
                at("name"),
                json!(name),
                "should be a domain with at least three segments separated by dots",
            ));
        } else if !names.insert(name.clone()) {
            errs.push(FieldError::duplicate(at("name"), json!(name)));
        }
        let versions: Vec<&str> =
            wh["admissionReviewVersions"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        if versions.is_empty() {
            errs.push(FieldError::required(at("admissionReviewVersions"), "must specify one of v1, v1beta1"));
        } else if !versions.iter().any(|v| *v == "v1" || *v == "v1beta1") {
            errs.push(FieldError::invalid(
                at("admissionReviewVersions"),
                json!(versions),
                "must include at least one of v1, v1beta1",
            ));
        }
        match wh["sideEffects"].as_str() {
            Some("None" | "NoneOnDryRun") => {}
            Some(other) => {
                errs.push(FieldError::not_supported(at("sideEffects"), json!(other), &["None", "NoneOnDryRun"]))
            }
            None => errs.push(FieldError::required(at("sideEffects"), "must specify one of None, NoneOnDryRun")),
        }
        match wh["failurePolicy"].as_str() {
            None => wh["failurePolicy"] = json!("Fail"),
            Some("Fail" | "Ignore") => {}
            Some(other) => errs.push(FieldError::not_supported(at("failurePolicy"), json!(other), &["Fail", "Ignore"])),
        }
        match wh["timeoutSeconds"].as_i64() {
            None => wh["timeoutSeconds"] = json!(10),
            Some(1..=30) => {}
            Some(t) => errs.push(FieldError::invalid(
                at("timeoutSeconds"),
                json!(t),
                "the timeout value must be between 1 and 30 seconds",
            )),
        }
        if wh["matchPolicy"].is_null() {
            wh["matchPolicy"] = json!("Equivalent");
        }
        for sel in ["namespaceSelector", "objectSelector"] {
            if wh[sel].is_null() {
                wh[sel] = json!({});
            }
        }
        let cc = &mut wh["clientConfig"];
        match (cc["url"].is_string(), cc["service"].is_object()) {
            (true, true) => {
                errs.push(FieldError::required(at("clientConfig"), "exactly one of url or service is required"))
            }
            (false, false) => {
                errs.push(FieldError::required(at("clientConfig"), "exactly one of url or service is required"))
            }
            (true, false) => {
                if !cc["url"].as_str().unwrap_or_default().starts_with("https://") {
                    errs.push(FieldError::invalid(
                        at("clientConfig.url"),
                        cc["url"].clone(),
                        "'https' is the only allowed URL scheme",
                    ));
                }
            }
            (false, true) => {
                if cc["service"]["port"].is_null() {
                    cc["service"]["port"] = json!(443);
                }
                for f in ["namespace", "name"] {
                    if cc["service"][f].as_str().unwrap_or_default().is_empty() {
                        errs.push(FieldError::required(at(&format!("clientConfig.service.{f}")), ""));
                    }
                }
            }
        }
        if let Some(rules) = wh["rules"].as_array_mut() {
            for r in rules {
                if r["scope"].is_null() {
                    r["scope"] = json!("*");
                }
            }
        }
    }
    errs
}
