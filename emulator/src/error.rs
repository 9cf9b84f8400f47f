//! API errors rendered as `Status` objects, with the codes and reasons the real server uses.

use serde_json::{Value, json};

/// An error answer: HTTP code, `Status.reason`, message and optional details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The `reason` field (`NotFound`, `Conflict`, `Invalid`, ...).
    pub reason: &'static str,
    /// Human-readable message, phrased like the real server's.
    pub message: String,
    /// `details` (name, group, kind, causes), when known.
    pub details: Option<Value>,
}

/// Result alias for request handling.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 for a named object: `services "x" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualified(resource, group);
        let mut e = Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found"));
        e.details = Some(json!({"name": name, "group": group, "kind": resource}));
        e
    }

    /// 404 for a path that names no resource.
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let mut e =
            Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(resource, group)));
        e.details = Some(json!({"name": name, "group": group, "kind": resource}));
        e
    }

    /// 409 Conflict on a stale resourceVersion or failed precondition.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(resource, group)),
        );
        e.details = Some(json!({"name": name, "group": group, "kind": resource}));
        e
    }

    /// 409 Conflict of server-side apply field ownership.
    pub fn apply_conflict(fields: &[(String, String)]) -> Self {
        let causes: Vec<Value> = fields
            .iter()
            .map(|(manager, path)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": path})
            })
            .collect();
        let list = fields.iter().map(|(m, p)| format!("- {m}: {p}")).collect::<Vec<_>>().join("\n");
        let mut e = Self::new(409, "Conflict", format!("Apply failed with {} conflict(s):\n{list}", fields.len()));
        e.details = Some(json!({"causes": causes}));
        e
    }

    /// 422 Invalid, naming the kind, object and each offending field.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let msgs: Vec<String> = causes.iter().map(|c| c.to_string()).collect();
        let message = format!("{} \"{name}\" is invalid: {}", qualified(kind, group), bracket(&msgs));
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.kind.reason(), "message": c.message_only(), "field": c.field}))
            .collect();
        let mut e = Self::new(422, "Invalid", message);
        e.details = Some(json!({"name": name, "group": group, "kind": kind, "causes": causes_json}));
        e
    }

    /// A write a ValidatingAdmissionPolicy refused, worded as kube-apiserver words it:
    /// `reason` Forbidden (403), Unauthorized (401), RequestEntityTooLarge (413) or
    /// Invalid (422, the default), about `resource.group "name"`.
    pub fn policy_denied(reason: &str, resource: &str, group: &str, name: &str, message: &str) -> Self {
        let what = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
        match reason {
            "Forbidden" => Self::new(403, "Forbidden", format!("{what} \"{name}\" is forbidden: {message}")),
            "Unauthorized" => Self::new(401, "Unauthorized", message.to_string()),
            "RequestEntityTooLarge" => Self::new(413, "RequestEntityTooLarge", message.to_string()),
            _ => {
                let mut e = Self::new(422, "Invalid", format!("{what} \"{name}\" is invalid: : {message}"));
                e.details = Some(json!({"name": name, "group": group, "kind": resource,
                                        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": ""}]}));
                e
            }
        }
    }

    /// 405 Method Not Allowed.
    pub fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    }

    /// 413 Request Entity Too Large.
    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
    }

    /// 415 Unsupported Media Type, with what was sent and what would work.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 403 Forbidden (e.g. creating in a terminating namespace).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 401 Unauthorized: a bearer token the server does not know.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 410 Gone: the requested resourceVersion is older than the retained history.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 504 for a resourceVersion the server has not reached: a client that remembers a
    /// version from before the server lost its state (kube-apiserver's watch cache
    /// answers so after waiting 3 s; clients are to list again).
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let mut e = Self::new(504, "Timeout", format!("Too large resource version: {requested}, current: {current}"));
        e.details = Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        }));
        e
    }

    /// 500 for a bug in the emulator; never a panic.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

fn bracket(msgs: &[String]) -> String {
    if msgs.len() == 1 { msgs[0].clone() } else { format!("[{}]", msgs.join(", ")) }
}

/// The kind of a field error (upstream `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// Required value missing.
    Required,
    /// Value not valid.
    Invalid,
    /// Value not among the supported ones.
    NotSupported,
    /// Value already taken.
    Duplicate,
    /// Field may not change.
    Forbidden,
    /// Too many items.
    TooMany,
    /// Value too long.
    TooLong,
}

impl FieldErrorKind {
    fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }
}

/// One invalid field: its path, what is wrong and the offending value.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// JSON path of the field (`spec.ports[0].nodePort`).
    pub field: String,
    /// Error kind.
    pub kind: FieldErrorKind,
    /// The offending value, if any.
    pub value: Option<Value>,
    /// Explanation.
    pub detail: String,
}

impl FieldError {
    /// `field: Required value`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Required, value: None, detail: detail.into() }
    }
    /// `field: Invalid value: v: detail`.
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Invalid, value: Some(value), detail: detail.into() }
    }
    /// `field: Unsupported value: v: supported values: ...`.
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        let list = supported.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported,
            value: Some(value),
            detail: format!("supported values: {list}"),
        }
    }
    /// `field: Duplicate value: v`.
    pub fn duplicate(field: impl Into<String>, value: Value) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Duplicate, value: Some(value), detail: String::new() }
    }
    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Forbidden, value: None, detail: detail.into() }
    }
    /// `field: Too long: may not be more than n bytes`.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooLong,
            value: None,
            detail: format!("may not be more than {max_bytes} bytes"),
        }
    }
    /// `field: Too many: n: must have at most m items`.
    pub fn too_many(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::TooMany, value: None, detail: detail.into() }
    }

    fn message_only(&self) -> String {
        let label = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::TooLong => "Too long",
        };
        let mut s = label.to_string();
        if let Some(v) = &self.value {
            s.push_str(&format!(": {v}"));
        }
        if !self.detail.is_empty() {
            s.push_str(&format!(": {}", self.detail));
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_kind_object_and_field() {
        let e = ApiError::invalid(
            "Service",
            "",
            "web",
            vec![FieldError::invalid("spec.ports[0].nodePort", json!(80), "provided port is not in the valid range")],
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Service \"web\" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range"
        );
        let s = e.status();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["details"]["causes"][0]["field"], "spec.ports[0].nodePort");
    }

    #[test]
    fn not_found_is_qualified_by_group() {
        let e = ApiError::not_found("ferrolb.io", "ipaddresspools", "p");
        assert_eq!(e.message, "ipaddresspools.ferrolb.io \"p\" not found");
        assert_eq!(e.status()["code"], 404);
    }
}
