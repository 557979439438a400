"""Pure logic of teg.istio.cluster_facts: schema features, image versions, which istiod to report, and
which API group is taken to serve EnvoyProxy. The API side runs in every integration test's plan."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from ansible_collections.teg.istio.plugins.module_utils import cluster
from ansible_collections.teg.istio.plugins.module_utils import facts as cf
from ansible_collections.teg.istio.plugins.module_utils import names
from ansible_collections.teg.istio.plugins.modules import cluster_facts

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO / "tests" / "localcp"))
import localcp  # noqa: E402  (the launcher resolves the upstream CRD folder)


def _crd(relative):
    with open(localcp.crds_dir() / relative) as fh:
        return next(d for d in yaml.safe_load_all(fh) if d and d.get("kind") == "CustomResourceDefinition")


@pytest.mark.parametrize("relative, pod_annotations, routing_type, shutdown", [
    ("envoy-gateway-v1.9.0/gateway.envoyproxy.io_envoyproxies.yaml", True, True, True),
    ("envoy-gateway-v0.5.0/config.gateway.envoyproxy.io_envoyproxies.yaml", True, False, False),
])
def test_schema_features_of_the_real_envoyproxy_crds(relative, pod_annotations, routing_type, shutdown):
    schema = cf._served_schema(_crd(relative), "v1alpha1")
    assert cf._schema_has(schema, cf.POD_ANNOTATIONS_PATH) is pod_annotations
    assert cf._schema_has(schema, cf.ROUTING_TYPE_PATH) is routing_type
    assert cf._schema_has(schema, cf.SHUTDOWN_PATH) is shutdown


def test_a_schema_without_pod_is_an_envoy_gateway_older_than_v0_4():
    # EG v0.3 had envoyDeployment with replicas only.
    schema = {"properties": {"spec": {"properties": {"provider": {"properties": {"kubernetes": {
        "properties": {"envoyDeployment": {"properties": {"replicas": {"type": "integer"}}}}}}}}}}}
    assert cf._schema_has(schema, cf.POD_ANNOTATIONS_PATH) is False
    assert cf._schema_has(schema, ("spec", "provider", "kubernetes", "envoyDeployment", "replicas")) is True
    assert cf._schema_has({}, cf.ROUTING_TYPE_PATH) is False


def test_served_schema_ignores_versions_that_are_not_served():
    crd = {"spec": {"versions": [
        {"name": "v1alpha1", "served": False, "schema": {"openAPIV3Schema": {"properties": {"a": {}}}}},
        {"name": "v1", "served": True, "schema": {"openAPIV3Schema": {"properties": {"b": {}}}}}]}}
    assert cf._served_schema(crd, "v1alpha1") == {}
    assert cf._served_schema(crd, "v1") == {"properties": {"b": {}}}
    assert cf._served_schema(crd, "v2") == {}


@pytest.mark.parametrize("image, version", [
    ("docker.io/istio/pilot:1.29.6", "1.29.6"),
    ("gcr.io/istio-release/pilot:1.19.10-distroless", "1.19.10-distroless"),
    ("registry.local:5000/istio/pilot:v1.22.0", "1.22.0"),
    ("registry.local:5000/istio/pilot", None),
    ("istio/pilot:1.29.6@sha256:" + "a" * 64, "1.29.6"),
    ("istio/pilot", None),
    ("istio/pilot:latest", "latest"),
    ("", None),
])
def test_istiod_version_is_the_image_tag(image, version):
    assert names.image_version(image) == version


def _deployment(namespace, name, revision=None, image="docker.io/istio/pilot:1.29.6"):
    labels = {"app": "istiod"}
    if revision:
        labels["istio.io/rev"] = revision
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels},
            "spec": {"template": {"spec": {"containers": [{"name": "discovery", "image": image}]}}}}


def test_the_default_revision_is_reported_when_several_istiods_run():
    canary = _deployment("istio-system", "istiod-canary", "canary", "docker.io/istio/pilot:1.30.0")
    default = _deployment("istio-system", "istiod", "default")
    assert cf._pick_istiod([canary, default]) == {
        "namespace": "istio-system", "name": "istiod", "version": "1.29.6", "revision": "default"}
    assert cf._pick_istiod([canary])["revision"] == "canary"
    assert cf._pick_istiod([]) is None


def test_an_istiod_without_revision_label_is_the_default_revision():
    assert cf._pick_istiod([_deployment("istio-system", "istiod")])["revision"] == "default"


def test_parameters_ref_always_has_the_four_keys():
    gc = {"spec": {"parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "p"}}}
    assert cf._parameters_ref(gc) == {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "p",
                                      "namespace": None}
    assert cf._parameters_ref({"spec": {}}) is None


class _Discovery(object):
    """Serves discovery documents from a dict, the shape /apis/<group>[/<version>] returns; stands in
    for the API client only to exercise the choice logic."""

    def __init__(self, docs):
        self.client = self
        self.docs = docs

    def request(self, method, path, serialize=True, header_params=None):
        if path == "/apis" and not serialize:
            # An API server without aggregated discovery answers /apis with a plain APIGroupList.
            return type("Response", (), {"data": json.dumps(self.docs.get("/apis", {"kind": "APIGroupList"}))})()
        if path not in self.docs:
            raise cluster.NotFoundError(type("E", (Exception,), {"status": 404, "reason": "", "body": "",
                                                                 "headers": {}})())
        return self.docs[path]


def _group(name, versions):
    return {"kind": "APIGroup", "name": name, "preferredVersion": {"version": versions[0]},
            "versions": [{"version": v} for v in versions]}


def test_envoy_gateway_v0_5_is_found_in_the_old_group_although_the_new_one_is_served():
    # EG v0.5 serves gateway.envoyproxy.io for its policy CRDs, but EnvoyProxy only in the old group.
    client = _Discovery({
        "/apis/gateway.envoyproxy.io": _group("gateway.envoyproxy.io", ["v1alpha1"]),
        "/apis/gateway.envoyproxy.io/v1alpha1": {"resources": [{"name": "authenticationfilters"}]},
        "/apis/config.gateway.envoyproxy.io": _group("config.gateway.envoyproxy.io", ["v1alpha1"]),
        "/apis/config.gateway.envoyproxy.io/v1alpha1": {"resources": [{"name": "envoyproxies"}]},
    })
    assert cluster.envoyproxy_group_version(client) == ("config.gateway.envoyproxy.io", "v1alpha1")


def test_the_new_group_wins_when_both_serve_envoyproxies():
    client = _Discovery({
        "/apis/gateway.envoyproxy.io": _group("gateway.envoyproxy.io", ["v1alpha1"]),
        "/apis/gateway.envoyproxy.io/v1alpha1": {"resources": [{"name": "envoyproxies"}]},
        "/apis/config.gateway.envoyproxy.io": _group("config.gateway.envoyproxy.io", ["v1alpha1"]),
        "/apis/config.gateway.envoyproxy.io/v1alpha1": {"resources": [{"name": "envoyproxies"}]},
    })
    assert cluster.envoyproxy_group_version(client) == ("gateway.envoyproxy.io", "v1alpha1")


def test_no_group_serves_envoyproxies():
    assert cluster.envoyproxy_group_version(_Discovery({})) == (None, None)


def test_the_return_documentation_names_every_key_the_contract_has():
    documented = yaml.safe_load(cluster_facts.RETURN)["cluster"]["contains"]
    assert set(documented) == {"kubernetes_version", "envoyproxy", "gateway_api", "istio", "gatewayclass",
                               "namespace_exists"}
    assert set(documented["envoyproxy"]["contains"]) == {
        "api_version", "group", "pod_annotations", "routing_type", "shutdown"}
    assert set(documented["istio"]["contains"]) == {"virtualservice_api_version", "peerauthentication_api_version",
                                                    "istiod"}
    assert set(documented["istio"]["contains"]["istiod"]["contains"]) == {"namespace", "name", "version", "revision"}


def test_objects_is_documented_with_its_two_keys():
    documented = yaml.safe_load(cluster_facts.RETURN)["objects"]["contains"]
    assert set(documented) == {"api_version", "resources"}


FACTS = {"envoyproxy": {"group": "gateway.envoyproxy.io", "api_version": "gateway.envoyproxy.io/v1alpha1"},
         "gateway_api": {"api_version": "gateway.networking.k8s.io/v1"},
         "istio": {"virtualservice_api_version": None, "peerauthentication_api_version": "security.istio.io/v1"}}


@pytest.mark.parametrize("kind, api_version", [
    ("EnvoyProxy", "gateway.envoyproxy.io/v1alpha1"),
    ("HTTPRoute", "gateway.networking.k8s.io/v1"),
    ("VirtualService", None),  # Istio's networking API not served (yet)
    ("PeerAuthentication", "security.istio.io/v1"),
    ("Service", None),  # not a kind whose version the flavours differ in: the caller names it
])
def test_the_served_version_is_used_for_the_kinds_that_differ_between_flavours(kind, api_version):
    assert cf._known_api_version(FACTS, kind) == api_version


def test_an_unserved_kind_reads_as_nothing_without_asking_the_api_server():
    class NoClient:
        def __getattr__(self, name):
            raise AssertionError("the API server must not be asked for an unserved kind")

    assert cf.read_objects(NoClient(), FACTS, [{"kind": "VirtualService", "label_selectors": []}]) == [
        {"api_version": None, "resources": []}]


@pytest.mark.parametrize("ref", [
    None,
    {"group": "gateway.envoyproxy.io", "kind": "ConfigMap", "name": "x", "namespace": "ns"},
    {"group": "config.gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "x", "namespace": "ns"},
])
def test_a_reference_that_is_not_to_a_served_envoyproxy_is_not_followed(ref):
    assert cf._referenced_envoyproxy(object(), FACTS["envoyproxy"], ref) is None
    assert cf._referenced_envoyproxy(object(), None, ref) is None


def test_aggregated_discovery_answers_the_same_in_one_request():
    """Where the API server serves aggregated discovery (Kubernetes 1.26+), /apis lists every group with
    its versions (preferred first) and resources, and no further discovery request is made."""
    def group(name, versions):
        return {"metadata": {"name": name},
                "versions": [{"version": v, "resources": [{"resource": r} for r in resources]} for v, resources in versions]}

    client = _Discovery({"/apis": {"kind": "APIGroupDiscoveryList", "items": [
        group("gateway.envoyproxy.io", [("v1alpha1", ["authenticationfilters"])]),
        group("config.gateway.envoyproxy.io", [("v1alpha1", ["envoyproxies"])]),
        group("gateway.networking.k8s.io", [("v1", ["gatewayclasses"]), ("v1beta1", ["gatewayclasses"])]),
    ]}})
    discovery = cluster.Discovery(client)
    assert cluster.envoyproxy_group_version(client, discovery) == ("config.gateway.envoyproxy.io", "v1alpha1")
    assert discovery.served_versions("gateway.networking.k8s.io") == ["v1", "v1beta1"]
    assert discovery.pick_version("gateway.networking.k8s.io", "gatewayclasses", ("v1", "v1beta1")) == "v1"
    assert discovery.served_versions("networking.istio.io") == []
