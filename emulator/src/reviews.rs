//! TokenReview and SubjectAccessReview: the two create-only APIs with which a server
//! in the cluster (kube-rbac-proxy, or ferrolb's own `/metrics`) asks the API server
//! who holds a bearer token and whether that user may do something. Nothing is
//! stored; the answer is the object with its `status` filled in, as kube-apiserver
//! answers.

use serde_json::{Value, json};

use crate::auth::{Attributes, Auth, User, allows, allows_non_resource};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::store::State;

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: authenticate `spec.token`
/// with the server's own token table.
pub fn token_review(auth: &Auth, mut body: Value) -> ApiResult<Value> {
    let token = body["spec"]["token"].as_str().unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::bad_request("token is required for TokenReview in authentication"));
    }
    let status = match auth.user_for(token) {
        Some(u) => json!({"authenticated": true, "user": {"username": u.name, "groups": u.groups, "extra": u.extra}}),
        None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    };
    body["status"] = status;
    Ok(body)
}

/// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`: decide for
/// `spec.user`/`spec.groups` as a request of theirs would be decided.
pub fn subject_access_review(auth: &Auth, st: &State, mut body: Value) -> ApiResult<Value> {
    let spec = &body["spec"];
    let user = User {
        name: spec["user"].as_str().unwrap_or("").to_string(),
        groups: spec["groups"].as_array().into_iter().flatten().filter_map(|g| g.as_str()).map(String::from).collect(),
        extra: serde_json::from_value(spec["extra"].clone()).unwrap_or_default(),
    };
    let (res, non) = (spec.get("resourceAttributes"), spec.get("nonResourceAttributes"));
    let mut causes = Vec::new();
    if user.name.is_empty() && user.groups.is_empty() {
        causes.push(FieldError::invalid("spec.user", json!(""), "at least one of user or group must be specified"));
    }
    if res.is_some() == non.is_some() {
        causes.push(FieldError::invalid(
            "spec.resourceAttributes",
            json!(res),
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("SubjectAccessReview", "authorization.k8s.io", "", causes));
    }
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let allowed = match (res, non) {
        (Some(r), _) => {
            let (verb, group, resource, sub, ns, name) =
                (s(r, "verb"), s(r, "group"), s(r, "resource"), s(r, "subresource"), s(r, "namespace"), s(r, "name"));
            let a = Attributes {
                verb: &verb,
                group: &group,
                resource: &resource,
                subresource: Some(sub.as_str()).filter(|x| !x.is_empty()),
                namespace: Some(ns.as_str()).filter(|x| !x.is_empty()),
                name: Some(name.as_str()).filter(|x| !x.is_empty()),
            };
            allows(auth, st, &user, &a)
        }
        (None, Some(n)) => allows_non_resource(auth, st, &user, &s(n, "verb"), &s(n, "path")),
        (None, None) => false,
    };
    body["status"] = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by a ClusterRoleBinding or RoleBinding"})
    } else {
        json!({"allowed": false})
    };
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceConfig;
    use crate::auth::Mode;

    #[test]
    fn a_token_review_names_the_tokens_user_or_says_it_is_unknown() {
        let auth = Auth::new(Mode::Rbac).with_token("t", User::service_account("mon", "prom"));
        let r = token_review(&auth, json!({"spec": {"token": "t"}})).unwrap();
        assert_eq!(r["status"]["authenticated"], true);
        assert_eq!(r["status"]["user"]["username"], "system:serviceaccount:mon:prom");
        assert!(r["status"]["user"]["groups"].as_array().unwrap().contains(&json!("system:serviceaccounts:mon")));
        let r = token_review(&auth, json!({"spec": {"token": "nope"}})).unwrap();
        assert_eq!(r["status"]["authenticated"], false);
        assert_eq!(token_review(&auth, json!({"spec": {}})).unwrap_err().code, 400);
    }

    #[test]
    fn a_subject_access_review_decides_as_a_request_would_be() {
        let st = State::new(100, ServiceConfig::default());
        let auth = Auth::new(Mode::Rbac);
        let review = |spec: Value| subject_access_review(&auth, &st, json!({"spec": spec}));
        let r =
            review(json!({"user": "system:anonymous", "nonResourceAttributes": {"path": "/version", "verb": "get"}}));
        assert_eq!(r.unwrap()["status"]["allowed"], true);
        let r = review(json!({"user": "x", "groups": ["system:authenticated"],
                              "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}));
        assert_eq!(r.unwrap()["status"]["allowed"], false);
        let r = review(json!({"user": "root", "groups": ["system:masters"],
                              "resourceAttributes": {"verb": "delete", "resource": "nodes"}}));
        assert_eq!(r.unwrap()["status"]["allowed"], true);
        let e = review(json!({"user": "x"})).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("exactly one of nonResourceAttributes or resourceAttributes"), "{}", e.message);
        let e = review(json!({"nonResourceAttributes": {"path": "/", "verb": "get"}})).unwrap_err();
        assert!(e.message.contains("spec.user"), "{}", e.message);
    }
}
