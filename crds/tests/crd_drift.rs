//! The CRDs committed in the chart must be exactly what the Rust types generate.

#[test]
fn committed_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrolb/crds");
    let mut expected: Vec<String> = Vec::new();
    for crd in ferrolb_crds::crds() {
        let name = ferrolb_crds::crd_file_name(&crd);
        let committed = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("{name} missing from charts/ferrolb/crds ({e}); run crdgen"));
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
    assert_eq!(present, expected, "stray or missing CRD files in charts/ferrolb/crds");
}
