//! The Helm lifecycle in the sandbox: `helm upgrade` with changed values rolls the
//! speakers one node at a time (each new Pod Ready before the next goes) and leaves
//! the controller alone, and the VIP answers through it; `helm uninstall` removes
//! the release and leaves no IP answered. Runs as root. What a rolling upgrade
//! costs clients is measured by the `rolling_upgrade` bench.

use std::time::Duration;

use ferrolb_e2e::sandbox::{NS, Options, Sandbox, pool_and_advertisement, process_running};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[test]
fn upgrade_rolls_the_speakers_one_by_one_and_uninstall_leaves_no_ip_answered() {
    assert!(privileged(), "the sandbox needs root (CI runs .ci/run as root)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { nodes: 3, ..Options::default() };
    let mut sb = rt.block_on(Sandbox::up_opts(&opts, dir.path())).expect("sandbox");
    let client = sb.client.clone();
    rt.block_on(async {
        pool_and_advertisement(&client, "p", &["198.51.100.100/32"], "all").await.unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "any", "ports": [{"containerPort": 8080}]}]}}))
        .unwrap();
        Api::<Pod>::namespaced(client.clone(), "default").create(&PostParams::default(), &pod).await.unwrap();
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}))
        .unwrap();
        Api::<Service>::namespaced(client.clone(), "default").create(&PostParams::default(), &svc).await.unwrap();
    });
    let st = sb.state.clone();
    let url = "http://198.51.100.100/";
    eventually("the VIP answers", Duration::from_secs(30), || st.client().curl(url, Duration::from_secs(2)));

    // The cluster's IPAddressPool CRD as the previous release left it (no
    // status.effectiveAddresses yet): the upgrade must bring the chart's.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let field = "/spec/versions/0/schema/openAPIV3Schema/properties/status/properties/effectiveAddresses";
    let older = json_patch::Patch(vec![json_patch::PatchOperation::Remove(json_patch::RemoveOperation {
        path: json_patch::jsonptr::PointerBuf::parse(field).unwrap(),
    })]);
    rt.block_on(crds.patch("ipaddresspools.ferrolb.io", &PatchParams::default(), &Patch::<()>::Json(older)))
        .expect("an older CRD");
    let has_field = |crd: &CustomResourceDefinition| serde_json::to_value(crd).unwrap().pointer(field).is_some();
    assert!(!has_field(&rt.block_on(crds.get("ipaddresspools.ferrolb.io")).unwrap()));
    let keys = ["speaker/node-1", "speaker/node-2", "speaker/node-3", "controller"];
    // The speakers start once the controller has made the heartbeat key and the kubelet
    // retried them: the witness is every container's process.
    let before: Vec<Option<u32>> = eventually("every container runs", Duration::from_secs(30), || {
        let pids: Vec<Option<u32>> = keys.iter().map(|k| sb.pid(k)).collect();
        pids.iter().all(Option::is_some).then_some(pids)
    });
    let rolled = rt.block_on(sb.upgrade(&json!({"speaker": {"refreshInterval": 20}}))).expect("upgrade");
    assert_eq!(
        rolled,
        ["ferrolb-speaker-node-1", "ferrolb-speaker-node-2", "ferrolb-speaker-node-3"],
        "every speaker rolled, in turn; the controller's Pod did not change"
    );
    for (i, n) in ["node-1", "node-2", "node-3"].iter().enumerate() {
        let l = &sb.state.launches[&format!("speaker/{n}")];
        assert!(l.args.contains(&"--refresh-interval=20".to_string()), "{n}: {:?}", l.args);
        assert!(!process_running(before[i].unwrap()), "{n}: the old speaker is gone");
        assert!(sb.pid(&format!("speaker/{n}")).is_some(), "{n}: the new speaker runs");
    }
    assert_eq!(sb.pid("controller"), before[3], "the controller was not restarted");
    assert!(has_field(&rt.block_on(crds.get("ipaddresspools.ferrolb.io")).unwrap()), "the CRD was upgraded");
    assert!(st.client().curl(url, Duration::from_secs(2)).is_some(), "the VIP answers after the upgrade");

    let pids: Vec<u32> = keys.iter().filter_map(|k| sb.pid(k)).collect();
    assert_eq!(pids.len(), 4);
    rt.block_on(sb.uninstall()).expect("uninstall");
    let daemonsets = rt.block_on(Api::<DaemonSet>::namespaced(client.clone(), NS).list(&Default::default())).unwrap();
    assert!(daemonsets.items.is_empty(), "the DaemonSet is gone");
    let pods = rt.block_on(Api::<Pod>::namespaced(client.clone(), NS).list(&Default::default())).unwrap();
    assert!(pods.items.is_empty(), "no ferrolb Pod is left");
    assert!(pids.iter().all(|p| !process_running(*p)), "every ferrolb process ended");
    assert!(st.arp_replies("198.51.100.100", 2).is_empty(), "nobody answers for the VIP any more");
    // The CRDs stay (helm.sh/resource-policy: keep), and with them the user's pools.
    let pools = Api::<ferrolb_crds::IPAddressPool>::namespaced(client.clone(), NS);
    assert!(rt.block_on(pools.get_opt("p")).unwrap().is_some(), "the pool survives the uninstall");
    assert_eq!(rt.block_on(crds.list(&Default::default())).unwrap().items.len(), ferrolb_crds::crds().len());
}
