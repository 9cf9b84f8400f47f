//! `metav1.LabelSelector` matching, validated once so that a malformed selector
//! in a custom resource becomes a clear error instead of matching nothing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// One parsed requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A validated label selector. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(Vec<Req>);

/// Why a selector is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// `matchExpressions[i].operator` is not one of the four.
    #[error(
        "matchExpressions[{index}].operator: unsupported operator {operator:?} (want In, NotIn, Exists or DoesNotExist)"
    )]
    Operator {
        /// Index of the expression.
        index: usize,
        /// The operator given.
        operator: String,
    },
    /// `In`/`NotIn` without values, or `Exists`/`DoesNotExist` with values.
    #[error("matchExpressions[{index}].values: {why}")]
    Values {
        /// Index of the expression.
        index: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A key that is not a valid label key (the API server refuses such labels, so the
    /// selector could never match).
    #[error("{at}: invalid label key {key:?}: {why}")]
    Key {
        /// Where: `matchLabels` or `matchExpressions[i].key`.
        at: String,
        /// The key given.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// A value that is not a valid label value.
    #[error("{at}: invalid label value {value:?}: {why}")]
    Value {
        /// Where: `matchLabels.KEY` or `matchExpressions[i].values[j]`.
        at: String,
        /// The value given.
        value: String,
        /// What is wrong.
        why: String,
    },
}

/// Kubernetes' rule for a label name or value part: at most 63 characters, alphanumeric
/// at both ends, `-`, `_` and `.` between.
fn check_name(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!("must be no more than 63 characters (it has {})", s.len()));
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ends = s.starts_with(|c: char| c.is_ascii_alphanumeric()) && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ends || !s.chars().all(ok_inner) {
        return Err("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
                    alphanumeric character"
            .into());
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name (`check_name`).
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Err(format!(
                "prefix {p:?} must be a lowercase DNS subdomain (like example.com) of at most 253 characters"
            ));
        }
    }
    if name.is_empty() {
        return Err("the name part must not be empty".into());
    }
    check_name(name).map_err(|e| format!("the name part {e}"))
}

/// A label value: empty, or a name (`check_name`).
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() { Ok(()) } else { check_name(value) }
}

impl Selector {
    /// Validate and convert an API selector.
    pub fn parse(sel: &LabelSelector) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            check_label_key(k).map_err(|why| SelectorError::Key { at: "matchLabels".into(), key: k.clone(), why })?;
            check_label_value(v).map_err(|why| SelectorError::Value {
                at: format!("matchLabels.{k}"),
                value: v.clone(),
                why,
            })?;
            reqs.push(Req::In(k.clone(), vec![v.clone()]));
        }
        for (index, e) in sel.match_expressions.iter().flatten().enumerate() {
            check_label_key(&e.key).map_err(|why| SelectorError::Key {
                at: format!("matchExpressions[{index}].key"),
                key: e.key.clone(),
                why,
            })?;
            let values = e.values.clone().unwrap_or_default();
            for (j, v) in values.iter().enumerate() {
                check_label_value(v).map_err(|why| SelectorError::Value {
                    at: format!("matchExpressions[{index}].values[{j}]"),
                    value: v.clone(),
                    why,
                })?;
            }
            let req = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError::Values { index, why: "must be non-empty for In and NotIn" });
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError::Values { index, why: "must be empty for Exists and DoesNotExist" });
                }
                "In" => Req::In(e.key.clone(), values),
                "NotIn" => Req::NotIn(e.key.clone(), values),
                "Exists" => Req::Exists(e.key.clone()),
                "DoesNotExist" => Req::DoesNotExist(e.key.clone()),
                other => return Err(SelectorError::Operator { index, operator: other.to_string() }),
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| match r {
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// Parse a list of selectors, naming the list index of the first bad one.
pub fn parse_all(field: &str, sels: &[LabelSelector]) -> Result<Vec<Selector>, String> {
    sels.iter().enumerate().map(|(i, s)| Selector::parse(s).map_err(|e| format!("{field}[{i}].{e}"))).collect()
}

/// MetalLB's rule for selector lists: empty matches everything, otherwise any one must match.
pub fn any_matches(sels: &[Selector], labels: &Labels) -> bool {
    sels.is_empty() || sels.iter().any(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() { None } else { Some(values.iter().map(|v| v.to_string()).collect()) },
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![expr("tier", "In", &["a", "b"]), expr("legacy", "DoesNotExist", &[])]),
        };
        let s = Selector::parse(&sel).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("legacy", "")])));
        assert!(!s.matches(&labels(&[("tier", "a")])));
        let not_in = Selector::parse(&LabelSelector {
            match_expressions: Some(vec![expr("x", "NotIn", &["1"])]),
            ..Default::default()
        })
        .unwrap();
        assert!(not_in.matches(&labels(&[])));
        assert!(!not_in.matches(&labels(&[("x", "1")])));
        assert!(Selector::default().matches(&labels(&[])));
    }

    #[test]
    fn malformed_selectors_name_the_expression() {
        let bad = LabelSelector { match_expressions: Some(vec![expr("k", "Equals", &["v"])]), ..Default::default() };
        let e = parse_all("spec.serviceSelectors", &[LabelSelector::default(), bad]).unwrap_err();
        assert_eq!(
            e,
            "spec.serviceSelectors[1].matchExpressions[0].operator: unsupported operator \"Equals\" (want In, NotIn, Exists or DoesNotExist)"
        );
        let empty_in = LabelSelector { match_expressions: Some(vec![expr("k", "In", &[])]), ..Default::default() };
        assert!(Selector::parse(&empty_in).is_err());
        let exists_vals =
            LabelSelector { match_expressions: Some(vec![expr("k", "Exists", &["v"])]), ..Default::default() };
        assert!(Selector::parse(&exists_vals).is_err());
    }

    #[test]
    fn keys_and_values_follow_the_label_syntax() {
        for good in ["app", "app.kubernetes.io/name", "node-role.kubernetes.io/control-plane", "a_b.c-d", "x/y"] {
            assert_eq!(check_label_key(good), Ok(()), "{good}");
        }
        for bad in ["", "-app", "app-", "has space", "a/b/c", "/name", "Example.com/x", "p/", &"k".repeat(64)] {
            assert!(check_label_key(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(check_label_value(""), Ok(()));
        assert!(check_label_value("with space").is_err());
        assert!(check_label_value(&"v".repeat(64)).is_err());
        let bad_key = LabelSelector { match_labels: Some(labels(&[("bad key", "v")])), ..Default::default() };
        let e = parse_all("spec.nodeSelectors", &[bad_key]).unwrap_err();
        assert!(e.starts_with("spec.nodeSelectors[0].matchLabels: invalid label key \"bad key\": "), "{e}");
        let bad_value =
            LabelSelector { match_expressions: Some(vec![expr("zone", "In", &["a", "b c"])]), ..Default::default() };
        let e = parse_all("spec.nodeSelectors", &[bad_value]).unwrap_err();
        assert!(
            e.starts_with("spec.nodeSelectors[0].matchExpressions[0].values[1]: invalid label value \"b c\""),
            "{e}"
        );
    }

    #[test]
    fn empty_list_matches_all_otherwise_any() {
        let a = Selector::parse(&LabelSelector { match_labels: Some(labels(&[("a", "1")])), ..Default::default() })
            .unwrap();
        let b = Selector::parse(&LabelSelector { match_labels: Some(labels(&[("b", "1")])), ..Default::default() })
            .unwrap();
        assert!(any_matches(&[], &labels(&[])));
        assert!(any_matches(&[a.clone(), b.clone()], &labels(&[("b", "1")])));
        assert!(!any_matches(&[a, b], &labels(&[("c", "1")])));
    }
}
