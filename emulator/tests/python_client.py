"""The emulator driven by the official Kubernetes Python client (`kubernetes` on PyPI),
a second client written elsewhere: its typed models send bodies without apiVersion and
kind, as client-go's typed clientsets do. Run by emulator/tests/python_client.rs with
the emulator's kubeconfig as the only argument; exits non-zero on the first failure.
"""
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
coord = client.CoordinationV1Api()
ext = client.ApiextensionsV1Api()
custom = client.CustomObjectsApi()

NS = "py-suite"


def expect_status(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status == code, f"{fn.__name__}: {e.status} {e.reason}: {e.body}"
        return e
    raise AssertionError(f"{fn.__name__} succeeded; expected {code}")


# Namespaces: the typed model has no apiVersion/kind set.
ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS, labels={"suite": "py"})))
assert ns.metadata.name == NS and ns.metadata.uid, ns
assert any(n.metadata.name == NS for n in core.list_namespace(label_selector="suite=py").items)
expect_status(409, core.create_namespace, client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))

# Services: watch while creating, then status through the subresource.
events = []
started = threading.Event()


def watch_services():
    w = watch.Watch()
    started.set()
    for ev in w.stream(core.list_namespaced_service, NS, timeout_seconds=10):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()


t = threading.Thread(target=watch_services)
t.start()
started.wait()
svc = client.V1Service(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1ServiceSpec(type="LoadBalancer", ports=[client.V1ServicePort(port=80, target_port=8080)],
                              selector={"app": "web"}),
)
created = core.create_namespaced_service(NS, svc)
assert created.spec.cluster_ip, "the API server allocates a cluster IP"
assert created.spec.ports[0].node_port, "and a node port for a LoadBalancer Service"
patched = core.patch_namespaced_service_status(
    "web", NS, {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.100"}]}}})
assert patched.status.load_balancer.ingress[0].ip == "198.51.100.100", patched.status
# A status write does not touch the spec, a spec write does not touch the status.
patched = core.patch_namespaced_service("web", NS, {"metadata": {"labels": {"tier": "front"}},
                                                    "status": {"loadBalancer": {}}})
assert patched.status.load_balancer.ingress[0].ip == "198.51.100.100", patched.status
replaced = core.read_namespaced_service("web", NS)
replaced.spec.ports[0].port = 81
replaced = core.replace_namespaced_service("web", NS, replaced)
assert replaced.spec.ports[0].port == 81
assert [s.metadata.name for s in core.list_service_for_all_namespaces(label_selector="tier=front").items] == ["web"]
core.delete_namespaced_service("web", NS)
expect_status(404, core.read_namespaced_service, "web", NS)
t.join(timeout=15)
assert not t.is_alive(), "the watch ended after the deletion"
kinds = [k for k, n in events if n == "web"]
assert kinds[0] == "ADDED" and "MODIFIED" in kinds and kinds[-1] == "DELETED", events

# Leases (coordination.k8s.io), as leader election uses them.
lease = coord.create_namespaced_lease(NS, client.V1Lease(
    metadata=client.V1ObjectMeta(name="node-1"),
    spec=client.V1LeaseSpec(holder_identity="node-1", lease_duration_seconds=15)))
assert lease.spec.holder_identity == "node-1"
lease.spec.holder_identity = "node-2"
stale = lease.metadata.resource_version
coord.replace_namespaced_lease("node-1", NS, lease)
lease.metadata.resource_version = stale
expect_status(409, coord.replace_namespaced_lease, "node-1", NS, lease)
assert coord.read_namespaced_lease("node-1", NS).spec.holder_identity == "node-2"

# A CRD, then custom objects (their bodies carry apiVersion and kind, as the client
# requires of dicts).
crd = client.V1CustomResourceDefinition(
    metadata=client.V1ObjectMeta(name="widgets.example.com"),
    spec=client.V1CustomResourceDefinitionSpec(
        group="example.com",
        names=client.V1CustomResourceDefinitionNames(plural="widgets", singular="widget", kind="Widget"),
        scope="Namespaced",
        versions=[client.V1CustomResourceDefinitionVersion(
            name="v1", served=True, storage=True,
            subresources=client.V1CustomResourceSubresources(status={}),
            schema=client.V1CustomResourceValidation(open_apiv3_schema=client.V1JSONSchemaProps(
                type="object",
                properties={
                    "spec": client.V1JSONSchemaProps(type="object", properties={
                        "size": client.V1JSONSchemaProps(type="integer", minimum=1)}),
                    "status": client.V1JSONSchemaProps(type="object", properties={
                        "ready": client.V1JSONSchemaProps(type="boolean")}),
                })))],
    ))
ext.create_custom_resource_definition(crd)
w = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
got = custom.create_namespaced_custom_object("example.com", "v1", NS, "widgets", w)
assert got["spec"]["size"] == 3 and got["metadata"]["uid"], got
bad = dict(w, metadata={"name": "w2"}, spec={"size": 0})
e = expect_status(422, custom.create_namespaced_custom_object, "example.com", "v1", NS, "widgets", bad)
assert "size" in e.body, e.body
st = custom.patch_namespaced_custom_object_status("example.com", "v1", NS, "widgets", "w1", {"status": {"ready": True}})
assert st["status"]["ready"] is True and st["spec"]["size"] == 3, st
items = custom.list_namespaced_custom_object("example.com", "v1", NS, "widgets")["items"]
assert [i["metadata"]["name"] for i in items] == ["w1"], items
custom.delete_namespaced_custom_object("example.com", "v1", NS, "widgets", "w1")
expect_status(404, custom.get_namespaced_custom_object, "example.com", "v1", NS, "widgets", "w1")
ext.delete_custom_resource_definition("widgets.example.com")

core.delete_namespace(NS)
print("python client suite: ok")
