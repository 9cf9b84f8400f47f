//! HTTP: path routing, query parameters, content negotiation, body limits and
//! watch streaming on top of the store.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{Attributes, User};
use crate::error::{ApiError, ApiResult};
use crate::selectors::{FieldSelector, LabelSelector, supported_fields};
use crate::store::{Event, EventType, ListOpts, PatchType, State, Target, WriteOpts};
use crate::{Inner, lock, table};

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    // A bug in the emulator answers 500 with a Status, like the real server, instead of
    // dropping the connection; the lock tolerates poisoning, so other clients go on.
    Router::new().fallback(handle).with_state(inner).layer(tower_http::catch_panic::CatchPanicLayer::custom(
        |_: Box<dyn std::any::Any + Send>| {
            error_response(&ApiError::internal("the emulator hit an internal error handling this request"))
        },
    ))
}

fn json_response(code: u16, v: &Value, warnings: &[String]) -> Response {
    response(code, Body::from(v.to_string()), "application/json", warnings)
}

/// A response of `content_type` with `Warning` headers.
fn response(code: u16, body: Body, content_type: &'static str, warnings: &[String]) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for w in warnings {
        if let Ok(h) = HeaderValue::from_str(&format!("299 - {}", json!(w))) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

/// The encoding a client asked for: protobuf when its most preferred media type is
/// kube-apiserver's protobuf and the object has a protobuf form (custom resources do
/// not), JSON otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Json,
    Protobuf,
}

impl Wire {
    fn preferred(accept: &str) -> Wire {
        let mut ranges: Vec<(f32, &str)> = accept
            .split(',')
            .filter(|r| !r.contains("as=Table"))
            .filter_map(|r| {
                let mut parts = r.split(';').map(str::trim);
                let media = parts.next().filter(|m| !m.is_empty())?;
                let q = parts.filter_map(|p| p.strip_prefix("q=")).find_map(|q| q.parse().ok()).unwrap_or(1.0);
                Some((q, media))
            })
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        match ranges.first() {
            Some((q, m)) if *q > 0.0 && *m == crate::protobuf::MEDIA_TYPE => Wire::Protobuf,
            _ => Wire::Json,
        }
    }

    /// `Json` where `v` has no protobuf form.
    fn for_value(self, v: &Value) -> Wire {
        if self == Wire::Protobuf && crate::protobuf::encodable(v) { Wire::Protobuf } else { Wire::Json }
    }

    /// One watch event, framed for this encoding.
    fn event(self, kind: &str, object: &Value) -> Bytes {
        if self == Wire::Protobuf {
            match crate::protobuf::encode_watch_frame(kind, object) {
                Ok(b) => return Bytes::from(b),
                Err(e) => tracing::warn!("watch event not encodable as protobuf, sent as an error: {e}"),
            }
            let status = ApiError::internal(format!("the emulator could not encode a {kind} event")).status();
            return crate::protobuf::encode_watch_frame("ERROR", &status).map(Bytes::from).unwrap_or_default();
        }
        event_line(kind, object)
    }
}

/// A response in the encoding the request asked for.
fn respond(req: &Req, code: u16, v: &Value, warnings: &[String]) -> Response {
    if Wire::preferred(&req.accept).for_value(v) == Wire::Protobuf {
        match crate::protobuf::encode_object(v) {
            Ok(b) => return response(code, Body::from(b), crate::protobuf::MEDIA_TYPE, warnings),
            Err(e) => tracing::warn!("answering JSON: the object has no protobuf form: {e}"),
        }
    }
    json_response(code, v, warnings)
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.status(), &[]);
    // As kube-apiserver: a Status that says when to retry says it in `Retry-After` too.
    if let Some(secs) = e.details.as_ref().and_then(|d| d["retryAfterSeconds"].as_u64())
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn text(code: StatusCode, body: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

async fn handle(AxState(inner): AxState<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query: HashMap<String, String> =
        parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let header_str =
        |h: header::HeaderName| parts.headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let accept = header_str(header::ACCEPT);
    let content_type = header_str(header::CONTENT_TYPE);
    let user_agent = header_str(header::USER_AGENT);
    let path = parts.uri.path().to_string();
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let user = match authenticate(&inner, peer, &header_str(header::AUTHORIZATION)) {
        Ok(u) => u,
        Err(e) => return error_response(&e),
    };
    let limit = inner.config.max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return error_response(&ApiError::too_large(limit)),
    };
    let req = Req { method: parts.method, path, query, accept, content_type, user_agent, body, peer, user };
    match route(&inner, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// The request's user: `None` when authentication is off; 401 for a token nobody has.
fn authenticate(inner: &Inner, peer: Option<std::net::IpAddr>, authorization: &str) -> ApiResult<Option<User>> {
    let Some(auth) = &inner.config.auth else { return Ok(None) };
    if peer.is_none() {
        return Ok(Some(User::admin("system:apiserver")));
    }
    match authorization.strip_prefix("Bearer ").map(str::trim) {
        Some(token) => auth.user_for(token).cloned().map(Some).ok_or_else(ApiError::unauthorized),
        None => Ok(Some(auth.unauthenticated_user())),
    }
}

struct Req {
    peer: Option<std::net::IpAddr>,
    user: Option<User>,
    method: Method,
    path: String,
    query: HashMap<String, String>,
    accept: String,
    content_type: String,
    user_agent: String,
    body: Bytes,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(|s| s.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }
    fn wants_table(&self) -> bool {
        self.accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
    }
    fn decode_body(&self) -> ApiResult<Value> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request body is empty"));
        }
        let ct = self.content_type.as_str();
        if ct.starts_with(crate::protobuf::MEDIA_TYPE) {
            return crate::protobuf::decode_object(&self.body).map_err(|e| ApiError::bad_request(e.to_string()));
        }
        if !(ct.is_empty() || ct.contains("json") || ct.contains("yaml")) {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in {ct}; the emulator reads JSON, YAML and \
                 {} (for the built-in types)",
                crate::protobuf::MEDIA_TYPE
            )));
        }
        let v: Value = if ct.contains("yaml") {
            serde_yaml::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?
        } else {
            serde_json::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))?
        };
        Ok(v)
    }
    /// The patch type its content type names.
    fn patch_type(&self) -> ApiResult<PatchType> {
        Ok(match self.content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => PatchType::Merge,
            "application/json-patch+json" => PatchType::Json,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" | "application/apply-patch+cbor" => {
                PatchType::Apply
            }
            other => {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: \
                     application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
                     application/strategic-merge-patch+json (got {other:?})"
                )));
            }
        })
    }
    fn write_opts(&self) -> WriteOpts {
        let default_manager = self.user_agent.split('/').next().unwrap_or("").to_string();
        WriteOpts {
            field_manager: self.q("fieldManager").map(String::from).unwrap_or(if default_manager.is_empty() {
                "unknown".into()
            } else {
                default_manager
            }),
            dry_run: self.q("dryRun") == Some("All"),
            field_validation: self.q("fieldValidation").unwrap_or("Warn").to_string(),
            force: self.flag("force"),
            explicit_manager: self.q("fieldManager").is_some(),
        }
    }
    fn list_opts(&self, t: &Target) -> ApiResult<ListOpts> {
        Ok(ListOpts {
            labels: LabelSelector::parse(self.q("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)?,
            fields: FieldSelector::parse(
                self.q("fieldSelector").unwrap_or(""),
                supported_fields(&t.rt.group, &t.rt.plural),
            )
            .map_err(ApiError::bad_request)?,
            limit: match self.q("limit") {
                Some(l) => l.parse().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
                None => 0,
            },
            continue_token: self.q("continue").filter(|c| !c.is_empty()).map(String::from),
            resource_version: self.q("resourceVersion").filter(|c| !c.is_empty()).map(String::from),
            resource_version_match: self.q("resourceVersionMatch").filter(|c| !c.is_empty()).map(String::from),
        })
    }
}

/// A create or update body must say what it is. For the built-in types,
/// kube-apiserver takes what is missing from the URL (client-go's typed clientsets and
/// the official Python client send bodies without `apiVersion`/`kind`); a custom
/// resource's body must carry both (the server's unstructured decoder answers "Object
/// 'Kind' is missing").
fn typed(mut body: Value, target: &Target) -> ApiResult<Value> {
    if !target.rt.custom
        && let Some(o) = body.as_object_mut()
    {
        for (k, v) in [("apiVersion", target.rt.api_version(&target.version)), ("kind", target.rt.kind.clone())] {
            if o.get(k).and_then(|x| x.as_str()).is_none_or(|x| x.is_empty()) {
                o.insert(k.to_string(), json!(v));
            }
        }
    }
    require_typed(&body)?;
    Ok(body)
}

fn require_typed(body: &Value) -> ApiResult<()> {
    for k in ["kind", "apiVersion"] {
        if body.get(k).and_then(|v| v.as_str()).is_none_or(|s| s.is_empty()) {
            let key = if k == "kind" { "Kind" } else { "apiVersion" };
            let shown: String = body.to_string().chars().take(200).collect();
            return Err(ApiError::bad_request(format!("Object '{key}' is missing in '{shown}'")));
        }
    }
    Ok(())
}

/// Authorize `attrs` for the request's user, record the decision in the access log, and
/// answer 403 as upstream when it is refused.
fn authorize_attrs(inner: &Arc<Inner>, req: &Req, attrs: &Attributes) -> ApiResult<()> {
    let allowed = match (&inner.config.auth, &req.user) {
        (Some(auth), Some(user)) => crate::auth::allows(auth, &lock(inner), user, attrs),
        _ => true,
    };
    inner.access.lock().unwrap_or_else(|p| p.into_inner()).push(crate::Access {
        peer: req.peer,
        user: req.user.as_ref().map(|u| u.name.clone()),
        allowed,
        verb: attrs.verb.into(),
        group: attrs.group.into(),
        resource: match attrs.subresource {
            Some(sub) => format!("{}/{sub}", attrs.resource),
            None => attrs.resource.to_string(),
        },
    });
    match (allowed, &req.user) {
        (true, _) => Ok(()),
        (false, Some(user)) => Err(ApiError::forbidden(attrs.forbidden_message(user))),
        (false, None) => Err(ApiError::forbidden("forbidden")),
    }
}

/// A TokenReview or SubjectAccessReview, authorized as a `create` of it.
fn review(inner: &Arc<Inner>, req: &Req, group: &str, resource: &str) -> ApiResult<Response> {
    let attrs = Attributes { verb: "create", group, resource, subresource: None, namespace: None, name: None };
    authorize_attrs(inner, req, &attrs)?;
    let body = req.decode_body()?;
    let (kind, api_version) = match resource {
        "tokenreviews" => ("TokenReview", "authentication.k8s.io/v1"),
        _ => ("SubjectAccessReview", "authorization.k8s.io/v1"),
    };
    let body = typed_as(body, kind, api_version)?;
    let no_auth = crate::auth::Auth::default();
    let auth = inner.config.auth.as_ref().unwrap_or(&no_auth);
    let out = match resource {
        "tokenreviews" => crate::reviews::token_review(auth, body)?,
        _ => crate::reviews::subject_access_review(auth, &lock(inner), body)?,
    };
    Ok(json_response(201, &out, &[]))
}

/// A review body's kind and apiVersion: filled from the URL when missing, refused when
/// they name something else.
fn typed_as(mut body: Value, kind: &str, api_version: &str) -> ApiResult<Value> {
    let Some(o) = body.as_object_mut() else { return Err(ApiError::bad_request("the body is not an object")) };
    for (k, want) in [("kind", kind), ("apiVersion", api_version)] {
        match o.get(k).and_then(|v| v.as_str()).filter(|v| !v.is_empty()) {
            None => {
                o.insert(k.into(), json!(want));
            }
            Some(got) if got != want => {
                return Err(ApiError::bad_request(format!("the body's {k} is {got:?}; this URL takes {want:?}")));
            }
            Some(_) => {}
        }
    }
    Ok(body)
}

async fn route(inner: &Arc<Inner>, req: Req) -> ApiResult<Response> {
    let segs: Vec<String> = req.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).map(String::from).collect();
    let s: Vec<&str> = segs.iter().map(|s| s.as_str()).collect();
    let get = req.method == Method::GET;
    let resource_path = matches!(s.as_slice(), ["api", _, _, ..] | ["apis", _, _, _, ..]);
    if !resource_path
        && let (Some(auth), Some(user)) = (&inner.config.auth, &req.user)
        && !crate::auth::allows_non_resource(auth, &lock(inner), user, &req.method.as_str().to_lowercase(), &req.path)
    {
        return Err(ApiError::forbidden(format!(
            "forbidden: User {:?} cannot {} path {:?}",
            user.name,
            req.method.as_str().to_lowercase(),
            req.path
        )));
    }
    match s.as_slice() {
        [] if get => {
            return Ok(json_response(
                200,
                &json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]}),
                &[],
            ));
        }
        ["healthz" | "livez" | "readyz", ..] if get => return Ok(text(StatusCode::OK, "ok")),
        ["version"] if get => {
            return Ok(json_response(
                200,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-ferrolb-emulator", "gitCommit": "", "gitTreeState": "clean",
                        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "n/a", "compiler": "rustc", "platform": "linux/amd64"}),
                &[],
            ));
        }
        ["api"] if get => return Ok(json_response(200, &lock(inner).registry.core_versions(), &[])),
        ["apis"] if get => return Ok(json_response(200, &lock(inner).registry.group_list(), &[])),
        ["api", v] if get => {
            return lock(inner)
                .registry
                .resource_list("", v)
                .map(|l| json_response(200, &l, &[]))
                .ok_or_else(ApiError::no_route);
        }
        ["openapi", "v3"] if get => return Ok(json_response(200, &lock(inner).registry.openapi_v3_index(), &[])),
        ["openapi", "v3", "api", v] if get => {
            return lock(inner)
                .registry
                .openapi_v3_doc("", v)
                .map(|d| json_response(200, &d, &[]))
                .ok_or_else(ApiError::no_route);
        }
        ["openapi", "v3", "apis", g, v] if get => {
            return lock(inner)
                .registry
                .openapi_v3_doc(g, v)
                .map(|d| json_response(200, &d, &[]))
                .ok_or_else(ApiError::no_route);
        }
        ["apis", g] if get => {
            return lock(inner).registry.group(g).map(|l| json_response(200, &l, &[])).ok_or_else(ApiError::no_route);
        }
        ["apis", g, v] if get => {
            return lock(inner)
                .registry
                .resource_list(g, v)
                .map(|l| json_response(200, &l, &[]))
                .ok_or_else(ApiError::no_route);
        }
        _ => {}
    }
    if let [
        "apis",
        g @ ("authentication.k8s.io" | "authorization.k8s.io"),
        "v1",
        r @ ("tokenreviews" | "subjectaccessreviews"),
    ] = s.as_slice()
        && req.method == Method::POST
    {
        return review(inner, &req, g, r);
    }
    let (group, version, rest) = match s.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let (legacy_watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let (target, alias) = {
        let st = lock(inner);
        let t = resolve(&st, group, version, rest)?;
        // events.k8s.io/v1 Events live in the core Event storage, as upstream.
        if (t.rt.group.as_str(), t.rt.plural.as_str()) == ("events.k8s.io", "events") {
            let core = st.registry.lookup("", "v1", "events").ok_or_else(ApiError::no_route)?;
            (Target { rt: core, version: "v1".into(), ..t }, true)
        } else {
            (t, false)
        }
    };
    let out = |v: Value| if alias { crate::events::to_v1(&v) } else { v };
    let is_watch = legacy_watch || req.flag("watch");
    let (resource, group) = if alias {
        ("events".to_string(), "events.k8s.io".to_string())
    } else {
        (target.rt.plural.clone(), target.rt.group.clone())
    };
    // Authorize as upstream does: the verb on resource[/subresource] in the request's namespace.
    let authorize = |verb: &str| -> ApiResult<()> {
        let attrs = Attributes {
            verb,
            group: &group,
            resource: &resource,
            subresource: target.subresource.as_deref(),
            namespace: target.namespace.as_deref().filter(|_| target.rt.namespaced),
            name: target.name.as_deref(),
        };
        authorize_attrs(inner, &req, &attrs)
    };
    authorize(match (&req.method, target.name.is_some()) {
        (&Method::GET, _) if is_watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    })?;
    if target.subresource.as_deref() == Some("log") {
        return pod_log(inner, &req, target);
    }
    if target.subresource.as_deref() == Some("scale") {
        return scale(inner, &req, target).await;
    }
    let body_in = |v: Value| if alias { crate::events::to_core(&v) } else { v };
    match req.method.clone() {
        Method::GET if is_watch => {
            let mut opts = req.list_opts(&target)?;
            if let Some(name) = &target.name {
                opts.fields.0.push(("metadata.name".into(), true, name.clone()));
            }
            watch(inner, &req, target, opts, alias)
        }
        Method::GET if target.name.is_some() => {
            let obj = out(lock(inner).get(&target)?);
            if req.wants_table() {
                let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
                let t = table::table(
                    &target.rt,
                    &target.version,
                    &[obj],
                    &rv,
                    None,
                    req.q("includeObject").unwrap_or("Metadata"),
                );
                return Ok(json_response(200, &t, &[]));
            }
            Ok(respond(&req, 200, &obj, &[]))
        }
        Method::GET => {
            let opts = req.list_opts(&target)?;
            let (items, rv, cont) = lock(inner).list(&target, &opts)?;
            let items: Vec<Value> = items.into_iter().map(out).collect();
            if req.wants_table() {
                let t = table::table(
                    &target.rt,
                    &target.version,
                    &items,
                    &rv,
                    cont.as_deref(),
                    req.q("includeObject").unwrap_or("Metadata"),
                );
                return Ok(json_response(200, &t, &[]));
            }
            let mut meta = json!({"resourceVersion": rv});
            if let Some(c) = cont {
                meta["continue"] = json!(c);
            }
            let (kind, av) = if alias {
                ("EventList".to_string(), "events.k8s.io/v1".to_string())
            } else {
                (target.rt.list_kind.clone(), target.rt.api_version(&target.version))
            };
            let list = json!({"kind": kind, "apiVersion": av, "metadata": meta, "items": items});
            Ok(respond(&req, 200, &list, &[]))
        }
        Method::POST if target.name.is_none() => {
            let body = typed(req.decode_body()?, &target)?;
            if alias {
                crate::events::validate_v1(&body)?;
            }
            let body = body_in(body);
            let w = admitted(inner, &req, &target, true, |st, o| st.create(&target, body.clone(), o)).await?;
            Ok(respond(&req, w.code, &out(w.object), &w.warnings))
        }
        Method::PUT if target.name.is_some() => {
            let body = typed(req.decode_body()?, &target)?;
            if alias {
                crate::events::validate_v1(&body)?;
            }
            let body = body_in(body);
            let w = admitted(inner, &req, &target, false, |st, o| st.update(&target, body.clone(), o)).await?;
            Ok(respond(&req, w.code, &out(w.object), &w.warnings))
        }
        Method::PATCH if target.name.is_some() => {
            let kind = req.patch_type()?;
            let body = req.decode_body()?;
            if alias && kind == PatchType::Json {
                return Err(ApiError::unsupported_media_type(
                    "JSON patches of events.k8s.io/v1 Events are not supported by the emulator; use a merge patch",
                ));
            }
            if kind == PatchType::Apply && target.subresource.is_none() && lock(inner).get(&target).is_err() {
                // An apply that creates needs `create` too, as upstream authorizes it. A
                // subresource never creates (upstream answers 404 without asking).
                authorize("create")?;
            }
            let body = body_in(body);
            let w = admitted(inner, &req, &target, false, |st, o| st.patch(&target, kind, body.clone(), o)).await?;
            Ok(respond(&req, w.code, &out(w.object), &w.warnings))
        }
        Method::DELETE if target.name.is_some() => {
            let options = if req.body.is_empty() { Value::Null } else { req.decode_body()? };
            let dry = req.q("dryRun") == Some("All")
                || options["dryRun"].as_array().is_some_and(|a| a.contains(&json!("All")));
            admit_delete(inner, &req, &target, dry).await?;
            let obj = mutate(inner, |st| st.delete(&target, &options, dry))?;
            Ok(respond(&req, 200, &out(obj), &[]))
        }
        Method::DELETE => {
            let opts = req.list_opts(&target)?;
            let items = mutate(inner, |st| st.delete_collection(&target, &opts, req.q("dryRun") == Some("All")))?;
            let list = json!({"kind": target.rt.list_kind, "apiVersion": target.rt.api_version(&target.version), "metadata": {}, "items": items});
            Ok(respond(&req, 200, &list, &[]))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// A write past the validating admission webhooks that match it (`crate::admission`):
/// the write is tried as a dry run for the object as it would be stored, the webhooks
/// review that, and the write runs for real if the stored object did not change
/// meanwhile (else all again, as upstream's update loop). `creating`: a POST.
async fn admitted(
    inner: &Arc<Inner>,
    req: &Req,
    target: &Target,
    creating: bool,
    write: impl Fn(&mut State, &WriteOpts) -> ApiResult<crate::store::Written>,
) -> ApiResult<crate::store::Written> {
    use crate::admission::{self, Operation};
    let opts = req.write_opts();
    let whole = Target { subresource: None, ..target.clone() };
    let version = |v: &Value| v["metadata"]["resourceVersion"].as_str().map(String::from);
    for _ in 0..5 {
        let policy_warnings;
        let (calls, request, seen) = {
            let mut st = lock(inner);
            let ops: &[Operation] =
                if creating { &[Operation::Create] } else { &[Operation::Create, Operation::Update] };
            if !admission::may_apply(&st, target, ops) && !crate::policy::may_apply(&st, target, ops) {
                drop(st);
                return mutate(inner, |st| write(st, &opts));
            }
            let old = if creating { None } else { st.get(&whole).ok() };
            let candidate = write(&mut st, &WriteOpts { dry_run: true, ..opts.clone() })?;
            let op = if old.is_some() { Operation::Update } else { Operation::Create };
            let old = old.unwrap_or(Value::Null);
            let name = candidate.object["metadata"]["name"].as_str().unwrap_or_default();
            let calls = admission::calls(&st, target, op, &candidate.object, &old);
            let request = admission::request(
                target,
                op,
                name,
                &candidate.object,
                &old,
                req.user.as_ref(),
                opts.dry_run,
                &opts.field_manager,
            );
            // ValidatingAdmissionPolicies first: a refusal needs no webhook call.
            policy_warnings = crate::policy::evaluate(&st, target, op, &request)?;
            (calls, request, version(&old))
        };
        if calls.is_empty() {
            return mutate(inner, |st| write(st, &opts)).map(|mut w| {
                w.warnings.extend(policy_warnings);
                w
            });
        }
        let mut warnings = policy_warnings;
        warnings.extend(admission::review(calls, &request, inner.config.webhook_dialer.as_ref()).await?);
        let done = mutate(inner, |st| {
            if !creating && st.get(&whole).ok().as_ref().and_then(version) != seen {
                return Ok(None);
            }
            write(st, &opts).map(Some)
        })?;
        if let Some(mut w) = done {
            w.warnings.extend(warnings);
            return Ok(w);
        }
    }
    Err(ApiError::internal("the object kept changing while admission webhooks reviewed the write; try again"))
}

/// A DELETE past the validating admission webhooks whose rules name DELETE.
async fn admit_delete(inner: &Arc<Inner>, req: &Req, target: &Target, dry_run: bool) -> ApiResult<()> {
    use crate::admission::{self, Operation};
    let (calls, request) = {
        let st = lock(inner);
        if !admission::may_apply(&st, target, &[Operation::Delete])
            && !crate::policy::may_apply(&st, target, &[Operation::Delete])
        {
            return Ok(());
        }
        let old = st.get(target)?;
        let calls = admission::calls(&st, target, Operation::Delete, &Value::Null, &old);
        let manager = req.write_opts().field_manager;
        let name = target.name.clone().unwrap_or_default();
        let request = admission::request(
            target,
            Operation::Delete,
            &name,
            &Value::Null,
            &old,
            req.user.as_ref(),
            dry_run,
            &manager,
        );
        crate::policy::evaluate(&st, target, Operation::Delete, &request)?;
        (calls, request)
    };
    if !calls.is_empty() {
        admission::review(calls, &request, inner.config.webhook_dialer.as_ref()).await?;
    }
    Ok(())
}

/// Run a write under the lock and publish the events it produced, in order, before unlocking.
fn mutate<T>(inner: &Inner, f: impl FnOnce(&mut State) -> ApiResult<T>) -> ApiResult<T> {
    let mut st = lock(inner);
    let r = f(&mut st);
    for ev in st.pending.drain(..) {
        let _ = inner.events.send(ev);
    }
    r
}

/// `GET pods/NAME/log`: the container's output as plain text, from the configured
/// source (the Pod must exist; `container` must name one of its containers;
/// `tailLines` keeps the last lines).
fn pod_log(inner: &Arc<Inner>, req: &Req, target: Target) -> ApiResult<Response> {
    if req.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let pod = lock(inner).get(&Target { subresource: None, ..target.clone() })?;
    let containers: Vec<&str> =
        pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let name = target.name.as_deref().unwrap_or_default();
    let container = match req.q("container") {
        Some(c) if containers.contains(&c) => c,
        Some(c) => {
            return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}")));
        }
        None if containers.len() == 1 => containers[0],
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let ns = target.namespace.as_deref().unwrap_or_default();
    let mut log = inner.config.pod_logs.as_ref().and_then(|f| (f.0)(ns, name, Some(container))).unwrap_or_default();
    if let Some(n) = req.q("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let lines: Vec<&str> = log.lines().collect();
        log = lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("{l}\n")).collect();
    }
    let mut r = Response::new(Body::from(log));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

fn resolve(st: &State, group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, res, tail @ ..]
            if st.registry.lookup(group, version, res).is_some_and(|rt| rt.namespaced) =>
        {
            (Some(ns.to_string()), *res, tail.first().copied(), tail.get(1).copied())
        }
        [res, tail @ ..] => (None, *res, tail.first().copied(), tail.get(1).copied()),
        [] => return Err(ApiError::no_route()),
    };
    if rest.len() > 5 {
        return Err(ApiError::no_route());
    }
    let rt = st.registry.lookup(group, version, plural).ok_or_else(ApiError::no_route)?;
    let pod_log = (group, plural, sub) == ("", "pods", Some("log"));
    if let Some(s) = sub
        && !pod_log
        && !(s == "status" && rt.status_subresource)
        && !(s == "scale" && rt.scale_subresource)
    {
        return Err(ApiError::no_route());
    }
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::no_route());
    }
    Ok(Target {
        rt,
        version: version.to_string(),
        namespace,
        name: name.map(String::from),
        subresource: sub.map(String::from),
    })
}

/// An object's `autoscaling/v1` Scale: `spec.replicas` (1 when unset, as defaulted),
/// the observed `status.replicas` and the selector as a string.
fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let mut selector: Vec<String> = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|l| l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    for e in obj["spec"]["selector"]["matchExpressions"].as_array().into_iter().flatten() {
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let key = e["key"].as_str().unwrap_or("");
        selector.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "DoesNotExist" => format!("!{key}"),
            _ => key.to_string(),
        });
    }
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                     "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector.join(",")},
    })
}

/// `/scale`: read or write `spec.replicas` through an `autoscaling/v1` Scale (what
/// `kubectl scale` and autoscalers use). A stale `metadata.resourceVersion` is a 409.
async fn scale(inner: &Arc<Inner>, req: &Req, target: Target) -> ApiResult<Response> {
    let main = Target { subresource: None, ..target.clone() };
    let current = lock(inner).get(&main)?;
    let now = scale_of(&current);
    let wanted = match req.method {
        Method::GET => return Ok(respond(req, 200, &now, &[])),
        Method::PUT => req.decode_body()?,
        Method::PATCH => {
            let kind = req.patch_type()?;
            let body = req.decode_body()?;
            let mut s = now.clone();
            match kind {
                PatchType::Json => crate::patch::json_patch(&mut s, &body).map_err(ApiError::bad_request)?,
                PatchType::Merge | PatchType::Strategic => crate::patch::merge_patch(&mut s, &body),
                PatchType::Apply => {
                    return Err(ApiError::unsupported_media_type(
                        "the scale subresource takes merge, strategic merge and JSON patches (not apply)",
                    ));
                }
            }
            s
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    let replicas = match wanted["spec"]["replicas"].as_i64() {
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => n,
        _ => {
            return Err(ApiError::invalid(
                "Scale",
                "autoscaling",
                main.name.as_deref().unwrap_or(""),
                vec![crate::error::FieldError::invalid(
                    "spec.replicas",
                    wanted["spec"]["replicas"].clone(),
                    "must be greater than or equal to 0",
                )],
            ));
        }
    };
    let mut patch = json!({"spec": {"replicas": replicas}});
    if let Some(rv) = wanted["metadata"]["resourceVersion"].as_str().filter(|rv| !rv.is_empty()) {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    let w = admitted(inner, req, &main, false, |st, o| st.patch(&main, PatchType::Merge, patch.clone(), o)).await?;
    Ok(respond(req, 200, &scale_of(&w.object), &w.warnings))
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Whether an event is visible to a watch, and as what (selector transitions included).
fn visible(ev: &Event, t: &Target, opts: &ListOpts) -> Option<EventType> {
    if ev.key.0 != t.rt.group || ev.key.1 != t.rt.plural {
        return None;
    }
    let ns = t.namespace.as_deref().filter(|_| t.rt.namespaced);
    let now = opts.matches(ns, &ev.object);
    match (ev.kind, &ev.old) {
        (EventType::Modified, Some(old)) => match (opts.matches(ns, old), now) {
            (true, true) => Some(EventType::Modified),
            (false, true) => Some(EventType::Added),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        },
        (k, _) => now.then_some(k),
    }
}

fn watch(inner: &Arc<Inner>, req: &Req, t: Target, opts: ListOpts, alias: bool) -> ApiResult<Response> {
    let send_initial = req.flag("sendInitialEvents");
    if send_initial && req.q("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            vec![crate::error::FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    let bookmarks = req.flag("allowWatchBookmarks");
    let table_cols = req.wants_table().then(|| t.rt.version(&t.version).map(|v| v.columns.clone()).unwrap_or_default());
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let av = if alias { "events.k8s.io/v1".to_string() } else { t.rt.api_version(&t.version) };
    let kind = t.rt.kind.clone();
    let wire = match (&table_cols, Wire::preferred(&req.accept)) {
        (None, Wire::Protobuf) if crate::protobuf::schema().message_for(&av, &kind).is_some() => Wire::Protobuf,
        _ => Wire::Json,
    };
    let render = {
        let av = av.clone();
        let kind = kind.clone();
        let cols = table_cols.clone();
        move |obj: &Value| -> Value {
            let mut o = obj.clone();
            o["apiVersion"] = json!(av);
            o["kind"] = json!(kind);
            if alias {
                o = crate::events::to_v1(&o);
            }
            match &cols {
                Some(c) => {
                    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": o["metadata"]["resourceVersion"]},
                                  "columnDefinitions": table::column_definitions(c), "rows": [table::row(&o, c, "Object")]})
                }
                None => o,
            }
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(256);
    let mut first: Vec<Bytes> = Vec::new();
    let (mut sub, start_rv) = {
        let st = lock(inner);
        let current = st.resource_version();
        let requested = opts.resource_version.as_deref().unwrap_or("");
        let start_rv = if send_initial || requested.is_empty() || requested == "0" {
            for obj in st.matching(&t, &opts) {
                first.push(wire.event("ADDED", &render(&obj)));
            }
            if send_initial {
                let bm = json!({"kind": kind, "apiVersion": av, "metadata": {"resourceVersion": current.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                first.push(wire.event("BOOKMARK", &bm));
            }
            current
        } else {
            let Ok(rv) = requested.parse::<u64>() else {
                return Err(ApiError::bad_request(format!("invalid resource version: {requested:?}")));
            };
            if rv > current {
                return Err(ApiError::too_large_resource_version(rv, current));
            }
            match st.events_since(rv) {
                None => {
                    let gone = ApiError::gone(format!("too old resource version: {rv} ({})", st.compacted() + 1));
                    first.push(wire.event("ERROR", &gone.status()));
                    drop(st);
                    let body = Body::from_stream(futures::stream::iter(first.into_iter().map(Ok::<_, Infallible>)));
                    return Ok(stream_response(body, wire));
                }
                Some(evs) => {
                    for ev in evs {
                        if let Some(k) = visible(&ev, &t, &opts) {
                            first.push(wire.event(k.as_str(), &render(&ev.object)));
                        }
                    }
                    current
                }
            }
        };
        (inner.events.subscribe(), start_rv)
    };
    let mut closer = inner.close_watches.subscribe();
    let interval = inner.config.bookmark_interval;
    tokio::spawn(async move {
        for line in first {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut last_rv = start_rv;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = closer.changed() => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    let bm = json!({"kind": kind, "apiVersion": av, "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(Ok(wire.event("BOOKMARK", &bm))).await.is_err() { return; }
                }
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= start_rv { continue; }
                        last_rv = ev.rv;
                        if let Some(k) = visible(&ev, &t, &opts)
                            && tx.send(Ok(wire.event(k.as_str(), &render(&ev.object)))).await.is_err() {
                            return;
                        }
                    }
                    // A watcher that falls behind is cut off; it resumes from its last rv like any client.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                },
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(stream_response(body, wire))
}

fn stream_response(body: Body, wire: Wire) -> Response {
    let mut r = Response::new(body);
    let ct = match wire {
        Wire::Json => "application/json",
        Wire::Protobuf => crate::protobuf::STREAM_MEDIA_TYPE,
    };
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    r
}
