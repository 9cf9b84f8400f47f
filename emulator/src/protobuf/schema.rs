//! The message table (`schema.txt`, written by `scripts/gen-protobuf-schema`).

use std::collections::HashMap;
use std::sync::OnceLock;

/// A field's wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Message,
    MapString,
    MapBytes,
    MapMessage,
}

impl Kind {
    pub fn is_map(self) -> bool {
        matches!(self, Kind::MapString | Kind::MapBytes | Kind::MapMessage)
    }
}

#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    pub json: String,
    pub kind: Kind,
    pub repeated: bool,
    /// The message type of a message field or a map's values (empty otherwise).
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Message {
    fields: Vec<Field>,
    by_tag: HashMap<u32, usize>,
}

impl Message {
    pub fn field(&self, tag: u32) -> Option<&Field> {
        self.by_tag.get(&tag).map(|i| &self.fields[*i])
    }
    /// In field-number order (the order Go writes them).
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }
}

/// Every message the emulator translates, and which (apiVersion, kind) each is.
#[derive(Debug, Default)]
pub struct Schema {
    messages: HashMap<String, Message>,
    kinds: HashMap<(String, String), String>,
    /// apiVersion -> the module its kinds live in (`api.apps.v1.`).
    modules: HashMap<String, String>,
}

const META: &str = "apimachinery.pkg.apis.meta.v1.";

impl Schema {
    fn parse(text: &str) -> Schema {
        let mut s = Schema::default();
        let mut current: Option<String> = None;
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let w: Vec<&str> = line.split(' ').collect();
            match w.as_slice() {
                ["K", api_version, kind, message] => {
                    let module = message.strip_suffix(message.rsplit('.').next().unwrap_or("")).unwrap_or("");
                    s.modules.insert((*api_version).into(), module.into());
                    s.kinds.insert(((*api_version).into(), (*kind).into()), (*message).into());
                }
                ["M", name] => {
                    s.messages.insert((*name).into(), Message::default());
                    current = Some((*name).into());
                }
                [tag, json, kind, card, message] => {
                    let Some(m) = current.as_ref().and_then(|c| s.messages.get_mut(c)) else { continue };
                    let kind = match *kind {
                        "string" => Kind::String,
                        "bytes" => Kind::Bytes,
                        "bool" => Kind::Bool,
                        "int32" => Kind::Int32,
                        "int64" => Kind::Int64,
                        "double" => Kind::Double,
                        "message" => Kind::Message,
                        "map_string" => Kind::MapString,
                        "map_bytes" => Kind::MapBytes,
                        "map_message" => Kind::MapMessage,
                        other => panic!("schema.txt: unknown kind {other}"),
                    };
                    let tag: u32 = tag.parse().expect("schema.txt: field number");
                    m.by_tag.insert(tag, m.fields.len());
                    m.fields.push(Field {
                        tag,
                        json: (*json).into(),
                        kind,
                        repeated: *card == "r",
                        message: if *message == "-" { String::new() } else { (*message).into() },
                    });
                }
                _ => panic!("schema.txt: unreadable line {line:?}"),
            }
        }
        for m in s.messages.values_mut() {
            m.fields.sort_by_key(|f| f.tag);
            m.by_tag = m.fields.iter().enumerate().map(|(i, f)| (f.tag, i)).collect();
        }
        s
    }

    pub fn message(&self, name: &str) -> Option<&Message> {
        self.messages.get(name)
    }

    /// The message of `kind` at `api_version`: a resource, its list, a type of its
    /// group version (`Scale`), or one of meta/v1's (`Status`, `DeleteOptions`), which
    /// every group version shares.
    pub fn message_for<'a>(&'a self, api_version: &str, kind: &str) -> Option<&'a str> {
        if let Some(m) = self.kinds.get(&(api_version.to_string(), kind.to_string())) {
            return Some(m);
        }
        let in_module = self
            .modules
            .get(api_version)
            .map(|module| format!("{module}{kind}"))
            .filter(|n| self.messages.contains_key(n));
        let in_meta = matches!(
            kind,
            "Status" | "DeleteOptions" | "APIGroup" | "APIGroupList" | "APIResourceList" | "APIVersions"
        )
        .then(|| format!("{META}{kind}"))
        .filter(|n| self.messages.contains_key(n));
        let name = in_module.or(in_meta)?;
        self.messages.get_key_value(&name).map(|(k, _)| k.as_str())
    }
}

/// The table, parsed once.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| Schema::parse(include_str!("schema.txt")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_lists_and_meta_types_resolve() {
        let s = schema();
        assert_eq!(s.message_for("apps/v1", "Deployment"), Some("api.apps.v1.Deployment"));
        assert_eq!(s.message_for("apps/v1", "DeploymentList"), Some("api.apps.v1.DeploymentList"));
        assert_eq!(s.message_for("v1", "Status"), Some("apimachinery.pkg.apis.meta.v1.Status"));
        assert_eq!(s.message_for("apps/v1", "DeleteOptions"), Some("apimachinery.pkg.apis.meta.v1.DeleteOptions"));
        assert_eq!(s.message_for("autoscaling/v1", "Scale"), Some("api.autoscaling.v1.Scale"));
        assert_eq!(s.message_for("ferrolb.io/v1beta1", "IPAddressPool"), None);
        let port = s.message("api.core.v1.ContainerPort").unwrap();
        assert_eq!(port.field(5).unwrap().json, "hostIP");
    }
}
