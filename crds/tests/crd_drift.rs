//! The CRDs committed in the chart must be exactly what the Rust types generate.

#[test]
fn committed_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrolb/files/crds");
    let mut expected: Vec<String> = Vec::new();
    for crd in ferrolb_crds::crds() {
        let name = ferrolb_crds::crd_file_name(&crd);
        let committed = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("{name} missing from charts/ferrolb/files/crds ({e}); run crdgen"));
        assert!(
            committed == ferrolb_crds::crd_yaml(&crd),
            "{name} drifted from crds/src/types.rs; run `cargo run -p ferrolb-crds --bin crdgen`"
        );
        expected.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    present.sort();
    expected.sort();
    assert_eq!(present, expected, "stray or missing CRD files in charts/ferrolb/files/crds");
}

/// Every spec and status field of every CRD is described in docs/crd-reference.md.
#[test]
fn crd_reference_documents_every_field() {
    fn walk(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (k, sub) in props {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                out.push(p.clone());
                walk(sub, &p, out);
            }
        }
    }
    let doc =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/crd-reference.md"))
            .expect("docs/crd-reference.md exists");
    for crd in ferrolb_crds::crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let root = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let kind = v["spec"]["names"]["kind"].as_str().unwrap().to_string();
        assert!(doc.contains(&format!("## {kind}")), "no section for {kind}");
        let mut fields = Vec::new();
        for top in ["spec", "status"] {
            walk(&root["properties"][top], top, &mut fields);
        }
        for f in fields {
            assert!(doc.contains(&format!("`{f}`")), "{kind} field `{f}` is not in docs/crd-reference.md");
        }
    }
}
