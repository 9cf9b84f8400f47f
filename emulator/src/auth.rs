//! Authentication and authorization, as kube-apiserver does them with
//! `--token-auth-file` and `--authorization-mode=RBAC`.
//!
//! Bearer tokens map to users (a name and groups). A request without a token is
//! `system:anonymous`; an unknown token is 401. The RBAC authorizer reads the
//! ClusterRoles, Roles and their bindings stored in the emulator at request time,
//! so `kubectl apply` of a chart's RBAC takes effect at once, as on a real server.
//! Members of `system:masters` are allowed everything; authenticated users may read
//! discovery, OpenAPI, health and version (the default `system:discovery` and
//! `system:public-info-viewer` bindings), unauthenticated ones only health and version.
//!
//! Not modelled: aggregated ClusterRoles (`aggregationRule`), the escalation check on
//! writes to roles and bindings, impersonation and client certificates.

use std::collections::HashMap;

use serde_json::Value;

use crate::store::State;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    /// User name (`system:serviceaccount:<ns>:<name>` for a ServiceAccount).
    pub name: String,
    /// Groups, including `system:authenticated` for anyone with a valid token.
    pub groups: Vec<String>,
    /// Extra attributes (`authentication.kubernetes.io/node-name` for the token of a
    /// Pod's ServiceAccount: the node the Pod runs on, since Kubernetes 1.30).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl User {
    /// A cluster administrator (`system:masters`): allowed everything.
    pub fn admin(name: &str) -> Self {
        User {
            name: name.into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    /// The user a ServiceAccount's token authenticates as.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        User {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            ..Default::default()
        }
    }

    /// The user a Pod's ServiceAccount token authenticates as, bound to the node it runs on
    /// (the token's `authentication.kubernetes.io/node-name` extra, Kubernetes 1.30+).
    pub fn service_account_on_node(namespace: &str, name: &str, node: &str) -> Self {
        let mut u = Self::service_account(namespace, name);
        u.extra.insert("authentication.kubernetes.io/node-name".into(), vec![node.to_string()]);
        u
    }

    /// The user of a request without credentials.
    pub fn anonymous() -> Self {
        User { name: "system:anonymous".into(), groups: vec!["system:unauthenticated".into()], ..Default::default() }
    }

    fn is_authenticated(&self) -> bool {
        self.groups.iter().any(|g| g == "system:authenticated")
    }
}

/// How requests are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Everything is allowed (the emulator's default, for tests that do not care).
    #[default]
    AlwaysAllow,
    /// Role-based access control from the stored roles and bindings.
    Rbac,
}

/// Static bearer tokens and the authorization mode.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: HashMap<String, User>,
    /// How authenticated requests are authorized.
    pub mode: Mode,
    /// Requests without credentials act as a cluster admin, as on kube-apiserver's former
    /// insecure port. The emulator speaks plain HTTP and kubectl never sends credentials
    /// over plain HTTP, so this is how kubectl administers it; clients that send a token
    /// (kube-rs does) are authorized as the token's user. When false, they are
    /// `system:anonymous`.
    pub anonymous_admin: bool,
}

impl Auth {
    /// No tokens yet, authorizing with `mode`; requests without credentials are anonymous.
    pub fn new(mode: Mode) -> Self {
        Auth { tokens: HashMap::new(), mode, anonymous_admin: false }
    }

    /// Let requests without credentials act as a cluster admin (see `anonymous_admin`).
    pub fn anonymous_admin(mut self) -> Self {
        self.anonymous_admin = true;
        self
    }

    /// The user of a request without credentials.
    pub fn unauthenticated_user(&self) -> User {
        if self.anonymous_admin { User::admin("system:unsecured") } else { User::anonymous() }
    }

    /// Accept `token` for `user`.
    pub fn with_token(mut self, token: impl Into<String>, user: User) -> Self {
        self.tokens.insert(token.into(), user);
        self
    }

    /// Read kube-apiserver's `--token-auth-file` format: CSV lines
    /// `token,user,uid[,"group1,group2"]`; `#` starts a comment line.
    pub fn parse_token_file(text: &str, mode: Mode) -> Result<Self, String> {
        let mut auth = Auth::new(mode);
        let mut rd = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        for (i, rec) in rd.records().enumerate() {
            let rec = rec.map_err(|e| format!("token file record {}: {e}", i + 1))?;
            let line = rec.position().map(|p| p.line()).unwrap_or(i as u64 + 1);
            let (Some(token), Some(name)) = (rec.get(0).filter(|t| !t.is_empty()), rec.get(1)) else {
                return Err(format!("token file line {line}: need at least token,user,uid"));
            };
            if name.is_empty() || rec.get(2).is_none() {
                return Err(format!("token file line {line}: need at least token,user,uid"));
            }
            let mut groups: Vec<String> = rec
                .get(3)
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(String::from)
                .collect();
            groups.push("system:authenticated".into());
            if auth
                .tokens
                .insert(token.to_string(), User { name: name.to_string(), groups, ..Default::default() })
                .is_some()
            {
                return Err(format!("token file line {line}: duplicate token"));
            }
        }
        Ok(auth)
    }

    /// The user a token belongs to; `None` for an unknown token (401).
    pub fn user_for(&self, token: &str) -> Option<&User> {
        self.tokens.get(token)
    }
}

/// A resource request as the authorizer sees it.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'a str,
    /// API group ("" for core).
    pub group: &'a str,
    /// Plural resource name.
    pub resource: &'a str,
    /// Subresource (`status`), if addressed.
    pub subresource: Option<&'a str>,
    /// Namespace of the request; `None` for cluster-scoped or all-namespaces requests.
    pub namespace: Option<&'a str>,
    /// Object name; `None` for collections and creates.
    pub name: Option<&'a str>,
}

impl Attributes<'_> {
    /// The message of the 403, worded as kube-apiserver words it.
    pub fn forbidden_message(&self, user: &User) -> String {
        let what = match self.name {
            Some(n) => format!("{} {n:?}", self.resource),
            None => self.resource.to_string(),
        };
        let res = match self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.to_string(),
        };
        let scope = match self.namespace {
            Some(ns) => format!("in the namespace {ns:?}"),
            None => "at the cluster scope".to_string(),
        };
        format!(
            "{what} is forbidden: User {:?} cannot {} resource {res:?} in API group {:?} {scope}",
            user.name, self.verb, self.group
        )
    }
}

/// Nothing is checked: authorization is off, or the user is in `system:masters`.
fn unrestricted(auth: &Auth, user: &User) -> bool {
    auth.mode == Mode::AlwaysAllow || user.groups.iter().any(|g| g == "system:masters")
}

/// Whether `user` may `verb` the non-resource URL `path`, as kube-apiserver's RBAC
/// authorizer decides it: the default `system:public-info-viewer` binding (health and
/// version, for everyone), `system:discovery` (discovery and OpenAPI, for the
/// authenticated), then the `nonResourceURLs` rules of the ClusterRoles that
/// ClusterRoleBindings grant (a RoleBinding never grants a non-resource URL).
pub fn allows_non_resource(auth: &Auth, st: &State, user: &User, verb: &str, path: &str) -> bool {
    if unrestricted(auth, user) {
        return true;
    }
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    if verb == "get" {
        if ["/healthz", "/livez", "/readyz", "/version"].into_iter().any(under) {
            return true;
        }
        if user.is_authenticated() && (path == "/" || ["/api", "/apis", "/openapi"].into_iter().any(under)) {
            return true;
        }
    }
    const RBAC: &str = "rbac.authorization.k8s.io";
    st.stored(RBAC, "clusterrolebindings")
        .filter(|b| binds(b, user, None))
        .filter(|b| b["roleRef"]["kind"] == "ClusterRole")
        .filter_map(|b| st.stored_one(RBAC, "clusterroles", "", b["roleRef"]["name"].as_str()?))
        .flat_map(|role| role["rules"].as_array().into_iter().flatten())
        .any(|rule| {
            strings(&rule["verbs"]).any(|v| v == "*" || v == verb)
                && strings(&rule["nonResourceURLs"]).any(|u| match u.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => u == path,
                })
        })
}

/// Whether `user` may do `a`, by the roles and bindings stored in `st`.
pub fn allows(auth: &Auth, st: &State, user: &User, a: &Attributes) -> bool {
    if unrestricted(auth, user) {
        return true;
    }
    const RBAC: &str = "rbac.authorization.k8s.io";
    let cluster_rules = st
        .stored(RBAC, "clusterrolebindings")
        .filter(|b| binds(b, user, None))
        .filter(|b| b["roleRef"]["kind"] == "ClusterRole")
        .filter_map(|b| st.stored_one(RBAC, "clusterroles", "", b["roleRef"]["name"].as_str()?));
    if cluster_rules.into_iter().any(|role| role_allows(role, a)) {
        return true;
    }
    let Some(ns) = a.namespace else { return false };
    st.stored(RBAC, "rolebindings")
        .filter(|b| b["metadata"]["namespace"] == ns && binds(b, user, Some(ns)))
        .filter_map(|b| {
            let name = b["roleRef"]["name"].as_str()?;
            match b["roleRef"]["kind"].as_str()? {
                "ClusterRole" => st.stored_one(RBAC, "clusterroles", "", name),
                "Role" => st.stored_one(RBAC, "roles", ns, name),
                _ => None,
            }
        })
        .any(|role| role_allows(role, a))
}

fn binds(binding: &Value, user: &User, binding_ns: Option<&str>) -> bool {
    let Some(subjects) = binding["subjects"].as_array() else { return false };
    subjects.iter().any(|s| {
        let name = s["name"].as_str().unwrap_or("");
        match s["kind"].as_str() {
            Some("User") => user.name == name,
            Some("Group") => user.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => match s["namespace"].as_str().filter(|n| !n.is_empty()).or(binding_ns) {
                Some(ns) => user.name == format!("system:serviceaccount:{ns}:{name}"),
                None => false,
            },
            _ => false,
        }
    })
}

fn role_allows(role: &Value, a: &Attributes) -> bool {
    role["rules"].as_array().is_some_and(|rules| rules.iter().any(|r| rule_allows(r, a)))
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str())
}

/// One PolicyRule, matched as upstream's `RuleAllows`.
fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verb = strings(&rule["verbs"]).any(|v| v == "*" || v == a.verb);
    let group = strings(&rule["apiGroups"]).any(|g| g == "*" || g == a.group);
    let combined = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    let resource = strings(&rule["resources"])
        .any(|r| r == "*" || r == combined || a.subresource.is_some_and(|s| r.strip_prefix("*/") == Some(s)));
    let mut names = strings(&rule["resourceNames"]).peekable();
    let name = names.peek().is_none() || a.name.is_some_and(|n| names.any(|r| r == n));
    verb && group && resource && name
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ServiceConfig;
    use crate::store::{Target, WriteOpts};

    fn put(st: &mut State, plural: &str, obj: Value) {
        let rt = st.registry.by_plural("rbac.authorization.k8s.io", plural).unwrap();
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        let t = Target { rt, version: "v1".into(), namespace: ns, name: None, subresource: None };
        st.create(&t, obj, &WriteOpts::default()).unwrap();
    }

    fn attrs<'a>(verb: &'a str, resource: &'a str, sub: Option<&'a str>, ns: Option<&'a str>) -> Attributes<'a> {
        Attributes { verb, group: "", resource, subresource: sub, namespace: ns, name: Some("x") }
    }

    fn state() -> State {
        let mut st = State::new(100, ServiceConfig::default());
        let rt = st.registry.by_plural("", "namespaces").unwrap();
        let t = Target { rt, version: "v1".into(), namespace: None, name: None, subresource: None };
        st.create(
            &t,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sys"}}),
            &WriteOpts::default(),
        )
        .unwrap();
        put(
            &mut st,
            "clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "svc"},
                   "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list"]},
                             {"apiGroups": [""], "resources": ["services/status"], "verbs": ["patch"]},
                             {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["only"]}]}),
        );
        put(
            &mut st,
            "clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "svc"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "svc"},
                   "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": "sys"}]}),
        );
        put(
            &mut st,
            "roles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "leases", "namespace": "sys"},
                   "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]}),
        );
        put(
            &mut st,
            "rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "leases", "namespace": "sys"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leases"},
                   "subjects": [{"kind": "ServiceAccount", "name": "ctl"}, {"kind": "Group", "name": "ops"}]}),
        );
        st
    }

    #[test]
    fn rbac_follows_bindings_verbs_subresources_and_names() {
        let st = state();
        let auth = Auth::new(Mode::Rbac);
        let ctl = User::service_account("sys", "ctl");
        let other = User::service_account("other", "ctl");
        assert!(allows(&auth, &st, &ctl, &attrs("list", "services", None, None)));
        assert!(allows(&auth, &st, &ctl, &attrs("patch", "services", Some("status"), Some("default"))));
        // The subresource grant does not cover the main resource and vice versa.
        assert!(!allows(&auth, &st, &ctl, &attrs("patch", "services", None, Some("default"))));
        assert!(!allows(&auth, &st, &ctl, &attrs("get", "services", Some("status"), Some("default"))));
        // A Role binds only in its namespace; the binding's subject namespace defaults to it.
        assert!(allows(&auth, &st, &ctl, &attrs("delete", "secrets", None, Some("sys"))));
        assert!(!allows(&auth, &st, &ctl, &attrs("delete", "secrets", None, Some("default"))));
        assert!(!allows(&auth, &st, &ctl, &attrs("list", "secrets", None, None)));
        // Same ServiceAccount name in another namespace: nothing.
        assert!(!allows(&auth, &st, &other, &attrs("list", "services", None, None)));
        // Groups bind too.
        let ops = User {
            name: "alice".into(),
            groups: vec!["ops".into(), "system:authenticated".into()],
            ..Default::default()
        };
        assert!(allows(&auth, &st, &ops, &attrs("get", "secrets", None, Some("sys"))));
        // resourceNames restrict to the named object; a create has no name and never matches.
        assert!(!allows(&auth, &st, &ctl, &attrs("get", "configmaps", None, Some("sys"))));
        let only = Attributes { name: Some("only"), ..attrs("get", "configmaps", None, Some("sys")) };
        assert!(allows(&auth, &st, &ctl, &only));
        let unnamed = Attributes { name: None, ..only };
        assert!(!allows(&auth, &st, &ctl, &unnamed));
        // Masters and AlwaysAllow pass everything.
        assert!(allows(&auth, &st, &User::admin("root"), &attrs("delete", "nodes", None, None)));
        assert!(allows(&Auth::new(Mode::AlwaysAllow), &st, &other, &attrs("delete", "nodes", None, None)));
    }

    #[test]
    fn non_resource_urls_follow_the_default_bindings_and_cluster_roles() {
        let mut st = state();
        let auth = Auth::new(Mode::Rbac);
        let get = |st: &State, u: &User, path: &str| allows_non_resource(&auth, st, u, "get", path);
        let (anon, sa) = (User::anonymous(), User::service_account("sys", "prom"));
        assert!(get(&st, &anon, "/version") && get(&st, &anon, "/readyz"));
        assert!(!get(&st, &anon, "/apis"));
        assert!(get(&st, &sa, "/apis") && get(&st, &sa, "/openapi/v3"));
        assert!(!get(&st, &sa, "/metrics"), "no default binding grants /metrics");
        put(
            &mut st,
            "clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"},
                   "rules": [{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]}),
        );
        // Bound by a RoleBinding: non-resource rules do not apply.
        put(
            &mut st,
            "rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "r", "namespace": "sys"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
                   "subjects": [{"kind": "ServiceAccount", "name": "prom"}]}),
        );
        assert!(!get(&st, &sa, "/metrics"));
        put(
            &mut st,
            "clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "reader"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
                   "subjects": [{"kind": "ServiceAccount", "name": "prom", "namespace": "sys"}]}),
        );
        assert!(get(&st, &sa, "/metrics") && get(&st, &sa, "/debug/pprof"));
        assert!(!get(&st, &sa, "/metricsx") && !get(&st, &sa, "/debug"));
        assert!(!allows_non_resource(&auth, &st, &sa, "post", "/metrics"), "the verb counts");
        assert!(!get(&st, &User::service_account("sys", "other"), "/metrics"));
    }

    #[test]
    fn token_file_is_kube_apiservers_csv() {
        let auth = Auth::parse_token_file(
            "# comment\nt1,alice,1,\"ops,dev\"\nt2,system:serviceaccount:sys:ctl,2\n",
            Mode::Rbac,
        )
        .unwrap();
        let a = auth.user_for("t1").unwrap();
        assert_eq!(a.name, "alice");
        assert_eq!(a.groups, ["ops", "dev", "system:authenticated"]);
        assert_eq!(auth.user_for("t2").unwrap().groups, ["system:authenticated"]);
        assert!(auth.user_for("t3").is_none());
        let e = Auth::parse_token_file("t1,alice\n", Mode::Rbac).unwrap_err();
        assert!(e.contains("line 1") && e.contains("token,user,uid"), "{e}");
        let e = Auth::parse_token_file("t1,a,1\nt1,b,2\n", Mode::Rbac).unwrap_err();
        assert!(e.contains("line 2") && e.contains("duplicate"), "{e}");
    }

    #[test]
    fn forbidden_message_reads_like_kube_apiserver() {
        let u = User::service_account("sys", "ctl");
        let m = attrs("patch", "services", Some("status"), Some("default")).forbidden_message(&u);
        assert_eq!(
            m,
            "services \"x\" is forbidden: User \"system:serviceaccount:sys:ctl\" cannot patch resource \
             \"services/status\" in API group \"\" in the namespace \"default\""
        );
    }
}
