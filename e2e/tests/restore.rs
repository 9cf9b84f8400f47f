//! A control plane restored from a backup: the sandbox's API server comes back with
//! the state of an earlier snapshot (objects, types and resourceVersions as they were,
//! as after an etcd restore), older than what the chart-installed controller's and
//! speakers' caches have seen. Their watches are refused ("Too large resource
//! version"), they list again, and ferrolb converges on the restored state: a Service
//! created after the backup is gone, so its IP is no longer answered for; a Service
//! from the backup keeps its IP and is still answered; a Service created after the
//! restore gets an IP and is answered. Runs as root.

use std::time::Duration;

use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{Families, Options, create, pool_and_advertisement};
use ferrolb_e2e::wait::{eventually, until};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::json;

fn lb(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
           "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"app": name}}})
}

#[test]
fn after_a_restore_from_a_backup_ferrolb_converges_on_the_restored_state() {
    let h = Harness::up(&Options { nodes: 2, families: Families::V4, ..Options::default() });
    let sb = h.sb();
    let svcs: Api<Service> = Api::namespaced(sb.client.clone(), "default");
    h.rt.block_on(pool_and_advertisement(&sb.client, "p", &["198.51.100.100/30"], "all")).unwrap();
    let ip_of = |name: &str| -> Option<String> {
        let s = h.rt.block_on(svcs.get_opt(name)).ok()??;
        ferrolb_model::ingress_ips(&s).first().map(|ip| ip.to_string())
    };
    let answered = |ip: &str| !sb.state.arp_replies(ip, 1).is_empty();

    h.rt.block_on(create(&svcs, lb("kept"))).unwrap();
    let kept = eventually("kept gets an IP", Duration::from_secs(30), || ip_of("kept"));
    until("kept answered", Duration::from_secs(30), || answered(&kept));
    let backup = sb.emulator.snapshot();

    h.rt.block_on(create(&svcs, lb("later"))).unwrap();
    let later = eventually("later gets an IP", Duration::from_secs(30), || ip_of("later"));
    until("later answered", Duration::from_secs(30), || answered(&later));
    assert!(sb.emulator.resource_version() > backup.resource_version());

    // The control plane comes back from the backup.
    sb.emulator.restore(&backup);
    assert!(h.rt.block_on(svcs.get_opt("later")).unwrap().is_none(), "later is not in the backup");

    // The speakers learnt that later is gone (their caches listed again): nobody
    // answers for its IP any more.
    until("later's IP no longer answered", Duration::from_secs(60), || !answered(&later));
    // A Service created now is seen and served (the controller listed again too).
    h.rt.block_on(create(&svcs, lb("after"))).unwrap();
    let after = eventually("after gets an IP", Duration::from_secs(60), || ip_of("after"));
    assert_ne!(after, kept, "kept's address is still kept's");
    until("after answered", Duration::from_secs(30), || answered(&after));
    // kept was never interrupted for long, and is still kept's, answered.
    assert_eq!(ip_of("kept").as_deref(), Some(kept.as_str()));
    until("kept still answered", Duration::from_secs(10), || answered(&kept));
}
