//! Flag value parsers both binaries share.

use std::time::Duration;

/// A duration flag: humantime (`15s`, `300ms`, `1m30s`), or a bare integer meaning
/// seconds, as the flags that took whole seconds always accepted; it must lie in
/// `min..=max`.
pub fn duration_between(min: Duration, max: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s: &str| {
        let s = s.trim();
        let d = match s.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => humantime::parse_duration(s)
                .map_err(|e| format!("{s:?}: {e} (write e.g. 15s, 300ms, or whole seconds)"))?,
        };
        if d < min || d > max {
            return Err(format!(
                "{s:?} must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(d)
    }
}

/// An optional namespace name (empty: none): a DNS-1123 label, as the API server
/// requires, so that a typo fails at start naming the flag instead of every watch
/// failing later.
pub fn optional_namespace(s: &str) -> Result<String, String> {
    let ok = s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_dns_labels_or_empty() {
        assert_eq!(optional_namespace(""), Ok(String::new()));
        assert_eq!(optional_namespace("metallb-system"), Ok("metallb-system".into()));
        for bad in ["MetalLB", "metallb_system", "-x", "x-", &"a".repeat(64)] {
            assert!(optional_namespace(bad).unwrap_err().contains("is not a namespace name"), "{bad}");
        }
    }

    #[test]
    fn durations_take_humantime_and_old_whole_seconds() {
        let p = duration_between(Duration::from_secs(2), Duration::from_secs(3600));
        assert_eq!(p("15"), Ok(Duration::from_secs(15)));
        assert_eq!(p("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(p("2500ms"), Ok(Duration::from_millis(2500)));
        assert_eq!(p("1m30s"), Ok(Duration::from_secs(90)));
        assert!(p("1").unwrap_err().contains("between 2s and 1h"));
        assert!(p("2h").unwrap_err().contains("between"));
        assert!(p("soon").unwrap_err().contains("\"soon\""));
    }
}
