//! What the speaker runs with, from its flags, validated here so that every bad
//! combination has a test and a message naming the flag.

use std::path::PathBuf;
use std::time::Duration;

use ferrolb_common::http::ListenAddr;

use crate::forward::Forwarding;
use crate::l2::GratuitousTiming;
use crate::membership::{HeartbeatSettings, HeartbeatTiming};

/// What the speaker needs from flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name.
    pub node: String,
    /// Namespace of pools, advertisements, Leases and ServiceL2Status.
    pub namespace: String,
    /// `--lb-class`.
    pub lb_class: Option<String>,
    /// Membership Lease duration.
    pub lease_duration: Duration,
    /// Move IPs back to their hash winner when it returns.
    pub revertive: bool,
    /// Announce from nodes labelled exclude-from-external-load-balancers too.
    pub ignore_exclude_lb: bool,
    /// Interface name patterns never used.
    pub exclude_interfaces: Vec<String>,
    /// Gratuitous burst and refresh.
    pub gratuitous: GratuitousTiming,
    /// How VIP traffic reaches the pods.
    pub forwarding: Forwarding,
    /// Metrics address.
    pub metrics_addr: ListenAddr,
    /// Heartbeats between speakers; `None` leaves failure detection to the Leases.
    pub heartbeats: Option<HeartbeatSettings>,
    /// metallb compat: MetalLB's namespace, whose `metallb.io` objects are read with
    /// ferrolb's (`None`: compat off).
    pub metallb_namespace: Option<String>,
}

impl Settings {
    /// The election rules these settings give (the same flags on every node).
    pub fn rules(&self) -> crate::plan::Rules {
        crate::plan::Rules { revertive: self.revertive, ignore_exclude_lb: self.ignore_exclude_lb }
    }
}

/// The heartbeat flags as given.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatFlags {
    /// `--memberlist-port`; 0 turns heartbeats off.
    pub port: u16,
    /// `--heartbeat-interval`.
    pub interval: Duration,
    /// `--suspect-after`.
    pub suspect_after: Duration,
    /// `--memberlist-secret-file`.
    pub secret_file: Option<PathBuf>,
    /// `--memberlist-secret` / `FERROLB_MEMBERLIST_SECRET`.
    pub secret: Option<String>,
    /// `--memberlist-additional-secret` / `FERROLB_MEMBERLIST_ADDITIONAL_SECRET`: also
    /// accepted, never used to sign (a key rotation).
    pub additional_secret: Option<String>,
    /// `--memberlist-legacy-heartbeats`: accept the previous release's format.
    pub legacy: bool,
}

impl HeartbeatFlags {
    /// Heartbeat settings, or an error naming the flag at fault.
    pub fn settings(&self) -> Result<Option<HeartbeatSettings>, String> {
        if self.port == 0 {
            return Ok(None);
        }
        let (i, sa) = (self.interval, self.suspect_after);
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&i) {
            return Err(format!("--heartbeat-interval {i:?} must be between 10ms and 10s"));
        }
        if sa < i * 2 {
            return Err(format!("--suspect-after {sa:?} must be at least twice --heartbeat-interval ({i:?})"));
        }
        let key = match (&self.secret_file, &self.secret) {
            (Some(path), _) => std::fs::read(path)
                .map_err(|e| format!("reading --memberlist-secret-file {}: {e}", path.display()))?
                .trim_ascii()
                .to_vec(),
            (None, Some(k)) => k.trim().as_bytes().to_vec(),
            (None, None) => {
                return Err("heartbeats need a shared key: --memberlist-secret-file or FERROLB_MEMBERLIST_SECRET \
                            (the chart creates one); --memberlist-port 0 turns heartbeats off"
                    .into());
            }
        };
        if key.len() < 16 {
            return Err(format!("the memberlist key has {} bytes; use at least 16", key.len()));
        }
        let mut keys = vec![key];
        if let Some(extra) = self.additional_secret.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            if extra.len() < 16 {
                return Err(format!("--memberlist-additional-secret has {} bytes; use at least 16", extra.len()));
            }
            keys.push(extra.as_bytes().to_vec());
        }
        let timing = HeartbeatTiming {
            interval: i,
            suspect_after: sa,
            claim_window: (sa * 4).max(Duration::from_secs(2)),
            ..HeartbeatTiming::default()
        };
        Ok(Some(HeartbeatSettings { port: self.port, keys, timing, legacy: self.legacy }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> HeartbeatFlags {
        HeartbeatFlags {
            port: 7946,
            interval: Duration::from_millis(100),
            suspect_after: Duration::from_millis(300),
            secret_file: None,
            secret: Some("0123456789abcdef".into()),
            additional_secret: None,
            legacy: true,
        }
    }

    #[test]
    fn good_flags_make_settings_and_port_zero_turns_heartbeats_off() {
        let s = flags().settings().unwrap().unwrap();
        assert_eq!((s.port, s.keys.clone()), (7946, vec![b"0123456789abcdef".to_vec()]));
        let rotating = HeartbeatFlags { additional_secret: Some(" fedcba9876543210 ".into()), ..flags() };
        assert_eq!(
            rotating.settings().unwrap().unwrap().keys[1],
            b"fedcba9876543210",
            "accepted too, after the signing key"
        );
        assert_eq!(s.timing.claim_window, Duration::from_secs(2));
        assert!(HeartbeatFlags { port: 0, ..flags() }.settings().unwrap().is_none());
    }

    #[test]
    fn every_bad_flag_is_named() {
        let table: Vec<(HeartbeatFlags, &str)> = vec![
            (HeartbeatFlags { interval: Duration::from_millis(5), ..flags() }, "--heartbeat-interval"),
            (HeartbeatFlags { interval: Duration::from_secs(11), ..flags() }, "--heartbeat-interval"),
            (HeartbeatFlags { suspect_after: Duration::from_millis(150), ..flags() }, "--suspect-after"),
            (HeartbeatFlags { secret: None, ..flags() }, "--memberlist-secret-file or FERROLB_MEMBERLIST_SECRET"),
            (HeartbeatFlags { secret: Some(" short ".into()), ..flags() }, "the memberlist key has 5 bytes"),
            (
                HeartbeatFlags { additional_secret: Some("short".into()), ..flags() },
                "--memberlist-additional-secret has 5 bytes",
            ),
            (
                HeartbeatFlags { secret_file: Some("/nonexistent/ferrolb-key".into()), ..flags() },
                "reading --memberlist-secret-file /nonexistent/ferrolb-key",
            ),
        ];
        for (f, want) in table {
            let e = f.settings().unwrap_err();
            assert!(e.contains(want), "{f:?}: {e}");
        }
    }

    #[test]
    fn a_key_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("ferrolb-key-{}", std::process::id()));
        std::fs::write(&dir, b"  0123456789abcdefXY\n").unwrap();
        let s = HeartbeatFlags { secret_file: Some(dir.clone()), secret: None, ..flags() }.settings();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(s.unwrap().unwrap().keys, [b"0123456789abcdefXY"]);
    }
}
