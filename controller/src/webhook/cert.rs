//! The webhook's certificate, made and renewed by the controller itself (as MetalLB's
//! controller does), kept in a Secret so that every replica serves the same one.
//!
//! The Secret (`kubernetes.io/tls`) holds `tls.crt`, `tls.key` and `ca.crt`; its
//! annotations record when the serving certificate expires and which names it
//! carries. A certificate is renewed 30 days before it expires or when the names
//! change; a renewal makes a new CA too, and `ca.crt` keeps the previous CA after the
//! new one, so an API server holding either `caBundle` trusts whichever certificate a
//! replica serves during the change.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Datelike, Duration, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Annotation: when the serving certificate expires (RFC 3339).
pub const NOT_AFTER: &str = "ferrolb.io/not-after";
/// Annotation: the DNS names the serving certificate carries, comma-separated.
pub const DNS_NAMES: &str = "ferrolb.io/dns-names";
/// How long a serving certificate lasts.
pub const VALIDITY: Duration = Duration::days(365);
/// Renew this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// The names a client uses for the webhook Service `service` in `namespace`.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A CA, a serving certificate it signed, and the key.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// PEM: the new CA, then the previous one if any.
    pub ca_pem: String,
    /// PEM: the serving certificate.
    pub cert_pem: String,
    /// PEM: its PKCS#8 key.
    pub key_pem: String,
    /// When the serving certificate expires.
    pub not_after: DateTime<Utc>,
}

/// Make a CA and a certificate for `names`, valid from a day before `now` for [`VALIDITY`].
pub fn generate(names: &[String], now: DateTime<Utc>, previous_ca: Option<&str>) -> anyhow::Result<Bundle> {
    // rcgen takes whole days.
    let ymd = |t: DateTime<Utc>| rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8);
    let not_before = now - Duration::days(1);
    let not_after = now + VALIDITY;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "ferrolb-webhook-ca");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = ymd(not_before);
    ca_params.not_after = ymd(not_after + Duration::days(1));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, names.get(2).or(names.first()).cloned().unwrap_or_default());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = ymd(not_before);
    params.not_after = ymd(not_after);
    let cert = params.signed_by(&key, &ca)?;
    let mut ca_pem = ca.pem();
    if let Some(prev) = previous_ca.and_then(first_pem) {
        ca_pem.push_str(&prev);
    }
    Ok(Bundle { ca_pem, cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after: ymd_back(not_after) })
}

/// `t` at midnight, as the certificate records it (rcgen takes whole days).
fn ymd_back(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_hms_opt(0, 0, 0).map(|d| d.and_utc()).unwrap_or(t)
}

/// The first PEM block of `pem`.
fn first_pem(pem: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = pem[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &pem[start..end]))
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let b = secret.data.as_ref()?.get(key)?;
    String::from_utf8(b.0.clone()).ok()
}

/// The PEM texts a Secret holds: (ca.crt, tls.crt, tls.key).
pub fn read(secret: &Secret) -> Option<(String, String, String)> {
    Some((text(secret, "ca.crt")?, text(secret, "tls.crt")?, text(secret, "tls.key")?))
}

/// Why the Secret needs a new certificate at `now`, if it does.
pub fn renewal_due(secret: &Secret, names: &[String], now: DateTime<Utc>) -> Option<String> {
    if read(secret).is_none() {
        return Some("the Secret lacks ca.crt, tls.crt or tls.key".into());
    }
    let ann = secret.metadata.annotations.clone().unwrap_or_default();
    let Some(not_after) = ann.get(NOT_AFTER).and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return Some(format!("no readable {NOT_AFTER} annotation"));
    };
    if ann.get(DNS_NAMES).map(String::as_str) != Some(names.join(",").as_str()) {
        return Some("the Service's names changed".into());
    }
    let left = not_after.with_timezone(&Utc) - now;
    (left < RENEW_BEFORE).then(|| format!("it expires in {} days", left.num_days()))
}

/// The Secret holding `b` (name, namespace and resourceVersion set by the caller).
pub fn secret(b: &Bundle, names: &[String]) -> Secret {
    let data: BTreeMap<String, ByteString> = [("ca.crt", &b.ca_pem), ("tls.crt", &b.cert_pem), ("tls.key", &b.key_pem)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let annotations =
        BTreeMap::from([(NOT_AFTER.to_string(), b.not_after.to_rfc3339()), (DNS_NAMES.to_string(), names.join(","))]);
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// `caBundle` as the webhook configuration stores it (base64 of the PEM).
pub fn ca_bundle(ca_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_fresh_certificate_is_kept_until_thirty_days_before_it_expires() {
        let names = dns_names("hook", "ns");
        let b = generate(&names, now(), None).unwrap();
        let s = secret(&b, &names);
        assert_eq!(renewal_due(&s, &names, now()), None);
        assert_eq!(renewal_due(&s, &names, now() + Duration::days(330)), None);
        assert!(renewal_due(&s, &names, now() + Duration::days(340)).is_some());
        assert!(renewal_due(&s, &dns_names("other", "ns"), now()).is_some(), "names changed");
        assert!(renewal_due(&Secret::default(), &names, now()).is_some(), "empty");
    }

    #[test]
    fn a_renewal_keeps_the_previous_ca_after_the_new_one() {
        let names = dns_names("hook", "ns");
        let first = generate(&names, now(), None).unwrap();
        assert_eq!(first.ca_pem.matches("BEGIN CERTIFICATE").count(), 1);
        let second = generate(&names, now(), Some(&first.ca_pem)).unwrap();
        assert_eq!(second.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(second.ca_pem.ends_with(&first.ca_pem));
        // And only one previous CA is carried.
        let third = generate(&names, now(), Some(&second.ca_pem)).unwrap();
        assert_eq!(third.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
    }
}
