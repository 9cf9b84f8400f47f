//! ValidatingAdmissionPolicy (`admissionregistration.k8s.io/v1`, GA in Kubernetes
//! 1.30): CEL rules the API server itself evaluates on writes, bound to resources by
//! ValidatingAdmissionPolicyBindings.
//!
//! For every binding, its policy applies to a write when the policy's
//! `matchConstraints` and the binding's `matchResources` (resource rules with their
//! operations, `excludeResourceRules`, `namespaceSelector`, `objectSelector`) match
//! and every `matchConditions` expression is true. Its `variables` are evaluated in
//! order; each `validations` expression must then be true, or the write is refused
//! (`validationActions: [Deny]`) or warned about (`Warn`). The CEL environment has
//! `object`, `oldObject` (null where there is none), `request` (operation, name,
//! namespace, userInfo with extra, resource, dryRun), `namespaceObject` and
//! `variables`, with Kubernetes' CEL library (kube-cel). An expression that fails to
//! evaluate follows the policy's `failurePolicy` (`Fail`, the default, refuses).
//!
//! Not modelled: `paramKind`/`paramRef` (policies with params are refused at
//! creation), `auditAnnotations`, `authorizer`, type checking against schemas.

use std::collections::HashMap;

use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};

use crate::admission::{Operation, resource_of, rule_matches, selector_matches};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::store::{State, Target};

const GROUP: &str = "admissionregistration.k8s.io";
const POLICIES: &str = "validatingadmissionpolicies";
const BINDINGS: &str = "validatingadmissionpolicybindings";

/// Refuse a policy whose expressions do not compile, or that needs params, as
/// kube-apiserver's validation does on create and update.
pub(crate) fn validate_policy(obj: &Value) -> Vec<FieldError> {
    let spec = &obj["spec"];
    let mut errs = Vec::new();
    if !spec["paramKind"].is_null() {
        errs.push(FieldError::forbidden("spec.paramKind", "policies with params are not supported by the emulator"));
    }
    let lists = [
        ("matchConditions", "expression"),
        ("variables", "expression"),
        ("validations", "expression"),
        ("validations", "messageExpression"),
    ];
    for (list, key) in lists {
        for (i, item) in spec[list].as_array().into_iter().flatten().enumerate() {
            let Some(expr) = item[key].as_str() else { continue };
            if let Err(e) = Program::compile(expr) {
                errs.push(FieldError::invalid(
                    format!("spec.{list}[{i}].{key}"),
                    json!(expr),
                    format!("compilation failed: {e}"),
                ));
            }
        }
    }
    if spec["validations"].as_array().is_none_or(|v| v.is_empty()) {
        errs.push(FieldError::required(
            "spec.validations",
            "validations or auditAnnotations must contain at least one item",
        ));
    }
    errs
}

/// Whether any bound policy's rules name `t`'s resource for one of `ops`, before the
/// object is known.
pub(crate) fn may_apply(st: &State, t: &Target, ops: &[Operation]) -> bool {
    let resource = resource_of(t);
    bound(st).any(|(_, p)| ops.iter().any(|op| rules_match(&p["spec"]["matchConstraints"], t, &resource, *op)))
}

/// The bindings with their policies.
fn bound(st: &State) -> impl Iterator<Item = (&Value, &Value)> {
    st.stored(GROUP, BINDINGS).filter_map(|b| {
        let name = b["spec"]["policyName"].as_str()?;
        Some((b, st.stored_one(GROUP, POLICIES, "", name)?))
    })
}

/// `resourceRules` match and no `excludeResourceRules` does.
fn rules_match(m: &Value, t: &Target, resource: &str, op: Operation) -> bool {
    let any = |k: &str| m[k].as_array().into_iter().flatten().any(|r| rule_matches(r, t, resource, op));
    any("resourceRules") && !any("excludeResourceRules")
}

/// `matchConstraints`/`matchResources` against the request: rules, namespace and object
/// selectors. An absent `matchResources` matches everything its policy does.
fn resources_match(m: &Value, st: &State, t: &Target, op: Operation, object: &Value, old: &Value) -> bool {
    if m.is_null() {
        return true;
    }
    let resource = resource_of(t);
    if m.get("resourceRules").is_some() && !rules_match(m, t, &resource, op) {
        return false;
    }
    if t.rt.namespaced {
        let ns = t.namespace.as_deref().unwrap_or_default();
        let labels = st.stored_one("", "namespaces", "", ns).map(|n| n["metadata"]["labels"].clone());
        if !selector_matches(&m["namespaceSelector"], &labels.unwrap_or(Value::Null)) {
            return false;
        }
    }
    [object, old]
        .iter()
        .filter(|o| !o.is_null())
        .any(|o| selector_matches(&m["objectSelector"], &o["metadata"]["labels"]))
}

fn to_cel(v: &Value) -> Cel {
    kube_cel::cel::to_value(v).unwrap_or(Cel::Null)
}

/// Evaluate `expr` in `ctx`.
fn eval(ctx: &Context, expr: &str) -> Result<Cel, String> {
    let p = Program::compile(expr).map_err(|e| format!("compilation failed: {e}"))?;
    p.execute(ctx).map_err(|e| e.to_string())
}

/// A write under every bound policy that applies: `Ok(warnings)`, or the refusal.
/// `request` is the write's AdmissionRequest (`admission::request`): CEL's `request`,
/// with its `object` and `oldObject`.
pub(crate) fn evaluate(st: &State, t: &Target, op: Operation, request: &Value) -> ApiResult<Vec<String>> {
    let mut warnings = Vec::new();
    if t.rt.group == GROUP && (t.rt.plural == POLICIES || t.rt.plural == BINDINGS) {
        return Ok(warnings);
    }
    let (object, old) = (&request["object"], &request["oldObject"]);
    let name = request["name"].as_str().unwrap_or_default();
    let ns = request["namespace"].as_str().unwrap_or_default();
    let namespace_object = st.stored_one("", "namespaces", "", ns).cloned().unwrap_or(Value::Null);
    for (binding, policy) in bound(st) {
        let spec = &policy["spec"];
        if !resources_match(&spec["matchConstraints"], st, t, op, object, old)
            || !resources_match(&binding["spec"]["matchResources"], st, t, op, object, old)
        {
            continue;
        }
        let (pname, bname) = (
            policy["metadata"]["name"].as_str().unwrap_or_default(),
            binding["metadata"]["name"].as_str().unwrap_or_default(),
        );
        let fail_closed = spec["failurePolicy"].as_str() != Some("Ignore");
        let mut ctx = Context::default();
        ctx.register_all();
        ctx.add_variable_from_value("object", to_cel(object));
        ctx.add_variable_from_value("oldObject", to_cel(old));
        ctx.add_variable_from_value("request", to_cel(request));
        ctx.add_variable_from_value("namespaceObject", to_cel(&namespace_object));
        ctx.add_variable_from_value("variables", Cel::Map(HashMap::<String, Cel>::new().into()));
        let verdict = judge(&mut ctx, spec);
        let message = match verdict {
            Ok(None) => continue,
            Ok(Some((message, reason))) => Some((message, reason)),
            Err(e) if fail_closed => Some((format!("expression evaluation failed: {e}"), "Invalid".to_string())),
            Err(_) => None,
        };
        let Some((message, reason)) = message else { continue };
        let actions: Vec<&str> =
            binding["spec"]["validationActions"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
        let text = format!("ValidatingAdmissionPolicy '{pname}' with binding '{bname}' denied request: {message}");
        if actions.contains(&"Warn") {
            warnings.push(format!(
                "Validation failed for ValidatingAdmissionPolicy '{pname}' with binding '{bname}': {message}"
            ));
        }
        if actions.contains(&"Deny") {
            return Err(ApiError::policy_denied(&reason, &t.rt.plural, &t.rt.group, name, &text));
        }
    }
    Ok(warnings)
}

/// Match conditions, variables and validations of one policy: `None` when it does not
/// apply or passes, else the first violation's message and reason.
fn judge(ctx: &mut Context, spec: &Value) -> Result<Option<(String, String)>, String> {
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        match eval(ctx, c["expression"].as_str().unwrap_or("true"))? {
            Cel::Bool(true) => {}
            Cel::Bool(false) => return Ok(None),
            other => return Err(format!("matchCondition {:?} is not a bool: {other:?}", c["name"])),
        }
    }
    let mut vars: HashMap<String, Cel> = HashMap::new();
    for v in spec["variables"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        let value = eval(ctx, v["expression"].as_str().unwrap_or("null"))?;
        vars.insert(name, value);
        ctx.add_variable_from_value("variables", Cel::Map(vars.clone().into()));
    }
    for v in spec["validations"].as_array().into_iter().flatten() {
        let expr = v["expression"].as_str().unwrap_or("true");
        match eval(ctx, expr)? {
            Cel::Bool(true) => {}
            Cel::Bool(false) => {
                let message = match v["messageExpression"].as_str() {
                    Some(me) => match eval(ctx, me) {
                        Ok(Cel::String(s)) => s.to_string(),
                        _ => v["message"].as_str().map(String::from).unwrap_or(format!("failed expression: {expr}")),
                    },
                    None => v["message"].as_str().map(String::from).unwrap_or(format!("failed expression: {expr}")),
                };
                let reason = v["reason"].as_str().unwrap_or("Invalid").to_string();
                return Ok(Some((message, reason)));
            }
            other => return Err(format!("validation {expr:?} is not a bool: {other:?}")),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceConfig;
    use crate::admission::request;
    use crate::auth::User;
    use crate::store::WriteOpts;

    fn put(st: &mut State, plural: &str, obj: Value) {
        let rt = st.registry.by_plural(GROUP, plural).unwrap();
        let t = Target { rt, version: "v1".into(), namespace: None, name: None, subresource: None };
        st.create(&t, obj, &WriteOpts::default()).unwrap();
    }

    fn lease_target(st: &State, name: &str) -> Target {
        let rt = st.registry.by_plural("coordination.k8s.io", "leases").unwrap();
        Target { rt, version: "v1".into(), namespace: Some("sys".into()), name: Some(name.into()), subresource: None }
    }

    fn own_lease_policy(st: &mut State) {
        put(
            st,
            POLICIES,
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                   "metadata": {"name": "own-lease"},
                   "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"],
                                "operations": ["CREATE", "UPDATE"], "resources": ["leases"]}]},
                            "matchConditions": [{"name": "speaker", "expression": "request.userInfo.username == 'system:serviceaccount:sys:spk'"}],
                            "variables": [{"name": "node", "expression": "'authentication.kubernetes.io/node-name' in request.userInfo.extra ? request.userInfo.extra['authentication.kubernetes.io/node-name'][0] : ''"}],
                            "validations": [{"expression": "variables.node == '' || object.metadata.name == variables.node",
                                             "messageExpression": "'may write only the Lease ' + variables.node", "reason": "Forbidden"}]}}),
        );
        put(
            st,
            BINDINGS,
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                   "metadata": {"name": "own-lease"}, "spec": {"policyName": "own-lease", "validationActions": ["Deny"]}}),
        );
    }

    #[test]
    fn a_policy_binds_a_node_bound_token_to_its_own_lease() {
        let mut st = State::new(100, ServiceConfig::default());
        own_lease_policy(&mut st);
        let lease = |n: &str| json!({"metadata": {"name": n}});
        let on = |node: &str| User::service_account_on_node("sys", "spk", node);
        let t = lease_target(&st, "node-1");
        assert!(may_apply(&st, &t, &[Operation::Update]));
        assert!(!may_apply(&st, &t, &[Operation::Delete]));
        let run = |name: &str, user: &User| {
            let t = lease_target(&st, name);
            let r = request(&t, Operation::Update, name, &lease(name), &lease(name), Some(user), false, "test");
            evaluate(&st, &t, Operation::Update, &r)
        };
        assert!(run("node-1", &on("node-1")).is_ok());
        let e = run("node-2", &on("node-1")).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "leases.coordination.k8s.io \"node-2\" is forbidden: ValidatingAdmissionPolicy 'own-lease' with binding \
             'own-lease' denied request: may write only the Lease node-1"
        );
        // Other users are not matched; a token without node information is let through.
        assert!(run("ferrolb-controller", &User::service_account("sys", "ctl")).is_ok());
        assert!(run("node-2", &User::service_account("sys", "spk")).is_ok());
    }

    #[test]
    fn policies_that_do_not_compile_or_need_params_are_refused() {
        let errs = validate_policy(&json!({"spec": {"paramKind": {"kind": "ConfigMap"},
            "validations": [{"expression": "object.metadata.name =="}]}}));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.paramKind", "spec.validations[0].expression"]);
        assert!(validate_policy(&json!({"spec": {}})).iter().any(|e| e.field == "spec.validations"));
    }

    #[test]
    fn an_evaluation_error_refuses_under_fail_and_passes_under_ignore() {
        let mut st = State::new(100, ServiceConfig::default());
        for (name, policy) in [("fail", "Fail"), ("ignore", "Ignore")] {
            put(
                &mut st,
                POLICIES,
                json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                       "metadata": {"name": name},
                       "spec": {"failurePolicy": policy, "matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                                    "operations": ["*"], "resources": ["leases"], "resourceNames": [name]}]},
                                "validations": [{"expression": "object.spec.missing.deeper == 1"}]}}),
            );
            put(
                &mut st,
                BINDINGS,
                json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                       "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}}),
            );
        }
        let run = |name: &str| {
            let obj = json!({"metadata": {"name": name}, "spec": {}});
            let t = lease_target(&st, name);
            evaluate(
                &st,
                &t,
                Operation::Create,
                &request(&t, Operation::Create, name, &obj, &Value::Null, None, false, "test"),
            )
        };
        let e = run("fail").unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("expression evaluation failed"), "{}", e.message);
        assert!(run("ignore").is_ok());
    }
}
