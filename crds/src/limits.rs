//! Sizes the API server enforces on text ferrolb writes, and the one way text that
//! may echo user input is cut to fit: an Event note over 1 KiB is refused
//! (`events.k8s.io/v1`), a condition message over 32 KiB too (`metav1.Condition`);
//! a message that quotes a 58 KB annotation would make every status write fail.

/// The longest Event note or condition message ferrolb writes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `text` if it fits in `max` bytes, else cut on a character boundary with a marker.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    const MORE: &str = " …";
    let mut end = max.saturating_sub(MORE.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary_to_fit() {
        assert_eq!(bounded("short", 10), "short");
        let long = "é".repeat(40_000);
        let cut = bounded(&long, MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES && cut.ends_with(" …"), "{}", cut.len());
        assert!(cut.starts_with("éé"));
    }
}
