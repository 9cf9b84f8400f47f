//! `events.k8s.io/v1` Events are stored as core `v1` Events, as in the real
//! server, so `kubectl describe` (which reads core Events) shows events that
//! controllers write with the newer API, and the other way round.

use serde_json::{Map, Value, json};

/// (events.k8s.io/v1 field, core/v1 field) pairs that map one to one.
const FIELDS: [(&str, &str); 13] = [
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
];

fn rename(v: &Value, from_new: bool) -> Value {
    let Some(m) = v.as_object() else { return v.clone() };
    let mut out = Map::new();
    for (k, val) in m {
        let mapped = FIELDS.iter().find_map(|(new, old)| {
            if from_new && k == new {
                Some(*old)
            } else if !from_new && k == old {
                Some(*new)
            } else {
                None
            }
        });
        let key = match (mapped, k.as_str(), from_new) {
            (Some(m), _, _) => m.to_string(),
            (None, "deprecatedCount", true) => "count".into(),
            (None, "count", false) => "deprecatedCount".into(),
            _ => k.clone(),
        };
        out.insert(key, val.clone());
    }
    Value::Object(out)
}

/// Upstream's limit on an `events.k8s.io/v1` Event's note.
pub const NOTE_LENGTH_LIMIT: usize = 1024;

/// What upstream's `events.k8s.io/v1` validation rejects that ferrolb could send:
/// a note over [`NOTE_LENGTH_LIMIT`] bytes.
pub fn validate_v1(v: &Value) -> Result<(), crate::error::ApiError> {
    let note = v.get("note").and_then(Value::as_str).unwrap_or("");
    if note.len() > NOTE_LENGTH_LIMIT {
        let name = v["metadata"]["name"].as_str().unwrap_or("");
        return Err(crate::error::ApiError::invalid(
            "Event",
            "events.k8s.io",
            name,
            vec![crate::error::FieldError::too_long("note", NOTE_LENGTH_LIMIT)],
        ));
    }
    Ok(())
}

/// An `events.k8s.io/v1` Event (or a partial one, as in a merge patch) in core form.
pub fn to_core(v: &Value) -> Value {
    let mut out = rename(v, true);
    if out.get("apiVersion").is_some() {
        out["apiVersion"] = json!("v1");
    }
    // Core clients read the component from `source` when `reportingComponent` is absent.
    if let Some(c) = out.get("reportingComponent").cloned()
        && out.get("source").is_none()
    {
        out["source"] = json!({"component": c});
    }
    out
}

/// A stored core Event in `events.k8s.io/v1` form.
pub fn to_v1(v: &Value) -> Value {
    let mut out = rename(v, false);
    out["apiVersion"] = json!("events.k8s.io/v1");
    out["kind"] = json!("Event");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Service", "name": "web"}, "note": "Assigned 198.51.100.1", "reason": "IPAllocated",
            "type": "Normal", "action": "Allocate", "reportingController": "ferrolb-controller", "reportingInstance": "c-0",
            "eventTime": "2026-01-01T00:00:00.000000Z", "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:01.000000Z"},
            "deprecatedCount": 2});
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "Assigned 198.51.100.1");
        assert_eq!(core["source"]["component"], "ferrolb-controller");
        assert_eq!(core["count"], 2);
        let back = to_v1(&core);
        for k in [
            "regarding",
            "note",
            "reason",
            "type",
            "action",
            "reportingController",
            "reportingInstance",
            "eventTime",
            "series",
            "deprecatedCount",
        ] {
            assert_eq!(back[k], v1[k], "{k}");
        }
    }

    #[test]
    fn partial_patches_convert_field_by_field() {
        let patch = json!({"series": {"count": 3}, "note": "x"});
        assert_eq!(to_core(&patch), json!({"series": {"count": 3}, "message": "x"}));
    }
}
