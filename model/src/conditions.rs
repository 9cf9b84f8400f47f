//! Conditions in the `metav1.Condition` shape, set the one way the API
//! conventions ask: `lastTransitionTime` moves only when the status does, and
//! a write is due only when something other than that time changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use ferrolb_crds::conditions::status;

/// A condition as ferrolb decides it, before it meets the object's current ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Condition type (`ferrolb.io/Allocated`, `Valid`, ...).
    pub type_: &'static str,
    /// `True` or `False`.
    pub ok: bool,
    /// CamelCase reason, from `ferrolb_crds::conditions::reason`.
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
}

impl Want {
    /// A condition of `type_`; a message longer than
    /// [`ferrolb_crds::limits::MAX_MESSAGE_BYTES`] (it may quote user input: an
    /// annotation, an address) is cut to fit.
    pub fn new(type_: &'static str, ok: bool, reason: &'static str, message: impl Into<String>) -> Want {
        let message = message.into();
        let message = if message.len() > ferrolb_crds::limits::MAX_MESSAGE_BYTES {
            ferrolb_crds::limits::bounded(&message, ferrolb_crds::limits::MAX_MESSAGE_BYTES)
        } else {
            message
        };
        Want { type_, ok, reason, message }
    }

    /// The `status` string.
    pub fn status(&self) -> &'static str {
        if self.ok { status::TRUE } else { status::FALSE }
    }

    /// The condition to write: this one, keeping the transition time of the current
    /// condition of the same type while its status is unchanged, else `now`.
    pub fn set(self, current: &[Condition], generation: Option<i64>, now: &Time) -> Condition {
        let st = self.status();
        let since = current
            .iter()
            .find(|c| c.type_ == self.type_ && c.status == st)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: self.type_.to_string(),
            status: st.to_string(),
            reason: self.reason.to_string(),
            message: self.message,
            last_transition_time: since,
            observed_generation: generation,
        }
    }
}

/// Whether two condition lists say the same thing: equal types, statuses, reasons,
/// messages and observed generations, in any order; transition times aside.
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    let key =
        |c: &Condition| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone(), c.observed_generation);
    let (mut a, mut b): (Vec<_>, Vec<_>) = (a.iter().map(key).collect(), b.iter().map(key).collect());
    a.sort();
    b.sort();
    a == b
}

/// Now, at the one-second precision `metav1.Time` has on the wire.
pub fn now() -> Time {
    let t = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let first = Want::new("Valid", true, "PoolValid", "fine").set(&[], Some(1), &at(100));
        assert_eq!(first.last_transition_time, at(100));
        let reworded =
            Want::new("Valid", true, "PoolValid", "still fine").set(std::slice::from_ref(&first), Some(2), &at(200));
        assert_eq!(reworded.last_transition_time, at(100));
        assert_eq!((reworded.message.as_str(), reworded.observed_generation), ("still fine", Some(2)));
        let flipped = Want::new("Valid", false, "Overlap", "overlaps").set(&[reworded], Some(2), &at(300));
        assert_eq!((flipped.status.as_str(), flipped.last_transition_time), ("False", at(300)));
    }

    #[test]
    fn a_message_quoting_a_huge_user_value_is_cut_to_fit() {
        let value = "x".repeat(58_000);
        let w = Want::new("ferrolb.io/Allocated", false, "InvalidAnnotation", format!("bad value {value:?}"));
        assert!(w.message.len() <= ferrolb_crds::limits::MAX_MESSAGE_BYTES && w.message.starts_with("bad value \"xx"));
    }

    #[test]
    fn sameness_ignores_transition_times_and_order_only() {
        let a = Want::new("A", true, "R", "m").set(&[], None, &at(1));
        let b = Want::new("B", false, "S", "n").set(&[], None, &at(1));
        let a_later = Want::new("A", true, "R", "m").set(&[], None, &at(9));
        assert!(same(&[a.clone(), b.clone()], &[b.clone(), a_later]));
        assert!(!same(std::slice::from_ref(&a), &[a.clone(), b.clone()]));
        let reworded = Want::new("A", true, "R", "other").set(&[], None, &at(1));
        assert!(!same(std::slice::from_ref(&a), &[reworded]));
        let newer = Want::new("A", true, "R", "m").set(&[], Some(3), &at(1));
        assert!(!same(&[a], &[newer]));
    }
}
