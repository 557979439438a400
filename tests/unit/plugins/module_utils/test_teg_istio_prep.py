"""Pure rendering of the teg_istio_prep role (module_utils/_teg_istio_prep/patches.py): the namespace label
patch and the EnvoyProxy pod-annotation definition, including the {} that lets the role skip the
API call when nothing is to change."""


import json

import pytest

from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep import patches as f
from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep import plan
from ansible_collections.teg.istio.plugins.module_utils.names import TegIstioError

ANNOTATION = "traffic.sidecar.istio.io/includeInboundPorts"
WANTED = {ANNOTATION: ""}
API = "gateway.envoyproxy.io/v1alpha1"
NS = "envoy-gateway-system"


def namespace(**labels):
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NS, "labels": dict({"kubernetes.io/metadata.name": NS}, **labels)}}


PRIOR = "teg.istio/prior"


def labels_of(patch):
    return patch["metadata"]["labels"]


def record_of(patch):
    return json.loads(patch["metadata"]["annotations"][PRIOR])


def test_the_injection_label_is_added_and_its_absence_recorded():
    patch, error = f.mesh_labels_patch(namespace())
    assert error is None and labels_of(patch) == {"istio-injection": "enabled"}
    assert record_of(patch) == {"/metadata/labels/istio-injection": [None, "enabled"]}


def test_a_namespace_already_in_the_mesh_needs_no_patch_whatever_revision_its_owners_chose():
    assert f.mesh_labels_patch(namespace(**{"istio-injection": "enabled"})) == ({}, None)
    assert f.mesh_labels_patch(namespace(**{"istio.io/rev": "canary"}), "canary") == ({}, None)
    # Never istio-injection beside the owners' revision: it would win over it.
    assert f.mesh_labels_patch(namespace(**{"istio.io/rev": "stable"})) == ({}, None)


def test_a_revision_replaces_the_injection_label_which_would_win_and_records_it():
    patch, _error = f.mesh_labels_patch(namespace(**{"istio-injection": "enabled"}), "canary")
    assert labels_of(patch) == {"istio.io/rev": "canary", "istio-injection": None}
    assert record_of(patch) == {"/metadata/labels/istio-injection": ["enabled", None],
                                "/metadata/labels/istio.io~1rev": [None, "canary"]}


def test_back_from_a_revision_the_collection_set_to_the_default_injection():
    first, _error = f.mesh_labels_patch(namespace(**{"istio-injection": "enabled"}), "canary")
    on_canary = namespace(**{"istio.io/rev": "canary"})
    on_canary["metadata"]["annotations"] = first["metadata"]["annotations"]
    patch, _error = f.mesh_labels_patch(on_canary)
    assert labels_of(patch) == {"istio-injection": "enabled", "istio.io/rev": None}
    # Back where the owners had it: nothing left to give back.
    assert patch["metadata"]["annotations"]["teg.istio/prior"] is None


def test_an_opted_out_namespace_is_refused_in_one_line_unless_enrolled_explicitly():
    opted_out = namespace(**{"istio-injection": "disabled"})
    patch, error = f.mesh_labels_patch(opted_out)
    assert error == ("namespace %s is opted out of the mesh by its owners (istio-injection=disabled): leave it out, or "
                     "enrol it explicitly with teg_istio_prep_enrol_opted_out: true (teardown gives "
                     "istio-injection=disabled back)" % NS)
    patch, error = f.mesh_labels_patch(opted_out, enrol_opted_out=True)
    assert error is None and labels_of(patch) == {"istio-injection": "enabled"}
    assert record_of(patch) == {"/metadata/labels/istio-injection": ["disabled", "enabled"]}


def test_a_namespace_without_labels_is_handled():
    assert labels_of(f.mesh_labels_patch({"metadata": {"name": NS}})[0]) == {"istio-injection": "enabled"}
    with pytest.raises(TegIstioError):
        f.mesh_labels_patch(None)


def test_a_missing_envoyproxy_is_rendered_whole():
    definition = f.envoyproxy_pod_annotations_patch(None, WANTED, API, "data-plane-sidecars", NS)
    assert definition == {
        "apiVersion": API, "kind": "EnvoyProxy",
        "metadata": {"name": "data-plane-sidecars", "namespace": NS,
                     "labels": {"app.kubernetes.io/managed-by": "teg.istio"}},
        "spec": {"provider": {"type": "Kubernetes",
                              "kubernetes": {"envoyDeployment": {"pod": {"annotations": {ANNOTATION: ""}}}}}},
    }
    assert f.envoyproxy_pod_annotations_patch({}, WANTED, API, "x", NS)["metadata"]["name"] == "x"


def tegs_envoyproxy(pod_annotations=None, **kubernetes):
    spec = {"provider": {"type": "Kubernetes"}, "logging": {"level": {"default": "warn"}}}
    if pod_annotations is not None:
        kubernetes["envoyDeployment"] = {"replicas": 2, "pod": {"annotations": pod_annotations}}
    if kubernetes:
        spec["provider"]["kubernetes"] = kubernetes
    return {"apiVersion": API, "kind": "EnvoyProxy", "metadata": {"name": "teg-envoy-proxy", "namespace": NS},
            "spec": spec}


def test_an_existing_envoyproxy_gets_only_what_is_missing():
    patch = f.envoyproxy_pod_annotations_patch(tegs_envoyproxy({"keep": "me"}), WANTED, API, "teg-envoy-proxy", NS)
    # A merge patch: logging, replicas and the other annotation are not mentioned, so they stay.
    assert patch == {"apiVersion": API, "kind": "EnvoyProxy", "metadata": {"name": "teg-envoy-proxy", "namespace": NS},
                     "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
                         "envoyDeployment": {"pod": {"annotations": {ANNOTATION: ""}}}}}}}


def test_a_different_value_is_corrected_and_an_equal_one_left_alone():
    wrong = tegs_envoyproxy({ANNOTATION: "8080"})
    assert f.envoyproxy_pod_annotations_patch(wrong, WANTED, API, "teg-envoy-proxy", NS)["spec"]["provider"][
        "kubernetes"]["envoyDeployment"]["pod"]["annotations"] == {ANNOTATION: ""}
    assert f.envoyproxy_pod_annotations_patch(tegs_envoyproxy({ANNOTATION: ""}), WANTED, API, "teg-envoy-proxy",
                                              NS) == {}


def test_an_envoyproxy_without_provider_gets_type_kubernetes():
    bare = {"apiVersion": API, "kind": "EnvoyProxy", "metadata": {"name": "p", "namespace": NS}, "spec": {}}
    assert f.envoyproxy_pod_annotations_patch(bare, WANTED, API, "p", NS)["spec"]["provider"]["type"] == "Kubernetes"


def test_a_daemonset_envoyproxy_gets_the_annotations_on_the_daemonset():
    ds = tegs_envoyproxy(envoyDaemonSet={"pod": {}})
    patch = f.envoyproxy_pod_annotations_patch(ds, WANTED, API, "teg-envoy-proxy", NS)
    assert patch["spec"]["provider"]["kubernetes"] == {"envoyDaemonSet": {"pod": {"annotations": {ANNOTATION: ""}}}}


def test_null_or_non_string_values_are_refused():
    for bad in ({ANNOTATION: None}, {ANNOTATION: 0}, {}, None):
        with pytest.raises(TegIstioError):
            f.envoyproxy_pod_annotations_patch(None, bad, API, "p", NS)


def test_a_provider_other_than_kubernetes_is_refused():
    custom = tegs_envoyproxy()
    custom["spec"]["provider"]["type"] = "Custom"
    with pytest.raises(TegIstioError, match="provider type Custom"):
        f.envoyproxy_pod_annotations_patch(custom, WANTED, API, "teg-envoy-proxy", NS)


def test_teardown_gives_back_what_the_record_says_and_nothing_else():
    record = {"/metadata/labels/istio-injection": ["disabled", "enabled"], "/metadata/labels/istio.io~1rev": [None, "x"]}
    ns = {"metadata": {"name": "eg", "labels": {"istio-injection": "enabled", "istio.io/rev": "x", "team": "a"},
                       "annotations": {PRIOR: json.dumps(record)}}}
    assert f.mesh_labels_patch(ns, "", "absent") == ({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "eg", "labels": {"istio-injection": "disabled", "istio.io/rev": None},
                     "annotations": {PRIOR: None}}}, None)
    # The owners' labels, with no record: nothing of the collection's to give back.
    owners = {"metadata": {"name": "eg", "labels": {"istio-injection": "enabled", "team": "a"}}}
    assert f.mesh_labels_patch(owners, "", "absent") == ({}, None)


def test_teardown_removes_only_our_annotations_from_teg_s_envoyproxy():
    ep = {"spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {"pod": {"annotations": {
        "traffic.sidecar.istio.io/includeInboundPorts": "", "team": "a"}}}}}}}
    patch = f.envoyproxy_pod_annotations_patch(ep, {"traffic.sidecar.istio.io/includeInboundPorts": ""},
                                               "gateway.envoyproxy.io/v1alpha1", "p", "eg", "absent")
    assert patch["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"] == {
        "traffic.sidecar.istio.io/includeInboundPorts": None}
    alone = {"spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {"pod": {"annotations": {
        "traffic.sidecar.istio.io/includeInboundPorts": ""}}}}}}}
    # The only thing under provider.kubernetes: the whole subtree goes, as before it was added.
    assert f.envoyproxy_pod_annotations_patch(alone, {"traffic.sidecar.istio.io/includeInboundPorts": ""},
                                              "v", "p", "eg", "absent")["spec"]["provider"] == {
        "type": "Kubernetes", "kubernetes": None}
    with_replicas = {"spec": {"provider": {"kubernetes": {"envoyDeployment": {"replicas": 2, "pod": {"annotations": {
        "traffic.sidecar.istio.io/includeInboundPorts": ""}}}}}}}
    assert f.envoyproxy_pod_annotations_patch(with_replicas, {"traffic.sidecar.istio.io/includeInboundPorts": ""},
                                              "v", "p", "eg", "absent")["spec"]["provider"]["kubernetes"] == {
        "envoyDeployment": {"pod": None}}
    assert f.envoyproxy_pod_annotations_patch({"spec": {}}, {"traffic.sidecar.istio.io/includeInboundPorts": ""},
                                              "gateway.envoyproxy.io/v1alpha1", "p", "eg", "absent") == {}
    assert f.envoyproxy_pod_annotations_patch(None, {"a": ""}, "v", "p", "eg", "absent") == {}


# The rate-limit Service's port 8081 (hop 4b of docs/traffic-simulation.md).
SETTINGS = {
    "state": "present", "namespace": NS, "revision": "", "gatewayclass": "teg", "service": "envoy-gateway",
    "service_port": 18000, "service_port_name": "", "app_protocol": "tls", "ratelimit_service": "envoy-ratelimit",
    "ratelimit_service_port": 8081, "envoyproxy_mode": "create", "envoyproxy_name": "data-plane-sidecars",
    "pod_annotations": {"traffic.sidecar.istio.io/includeInboundPorts": ""}, "sidecar_drain": "auto",
    "istio_version": "", "mesh_mode": "sidecar",
}
FACTS = {
    "envoyproxy": {"api_version": "gateway.envoyproxy.io/v1alpha1", "group": "gateway.envoyproxy.io",
                   "pod_annotations": True},
    "gateway_api": {"api_version": "gateway.networking.k8s.io/v1"},
    "gatewayclass": {"name": "teg", "parameters_ref": None, "envoyproxy": None},
}


def service(name, port, **extra):
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"ports": [dict({"name": "grpc" if port == 18000 else "http", "port": port}, **extra)]}}


def present_read(ratelimit):
    read = {"namespace": {"resources": [namespace()]},
            "service": {"resources": [service("envoy-gateway", 18000, appProtocol="tls")]},
            "own_envoyproxy": {"resources": []}}
    if ratelimit is not None:
        read["ratelimit_service"] = {"resources": [ratelimit]}
    return read


def test_the_rate_limit_port_is_declared_tls_when_the_service_exists():
    decisions, errors = plan.decide_present(FACTS, present_read(service("envoy-ratelimit", 8081)), SETTINGS, False)
    assert errors == []
    assert decisions["ratelimit_port"] is True


def test_a_declared_rate_limit_port_or_no_rate_limit_service_needs_no_write():
    declared = service("envoy-ratelimit", 8081, appProtocol="tls")
    assert plan.decide_present(FACTS, present_read(declared), SETTINGS, False)[0]["ratelimit_port"] is False
    assert plan.decide_present(FACTS, present_read(None), SETTINGS, False)[0]["ratelimit_port"] is False


def test_a_rate_limit_service_without_the_port_is_refused_naming_the_variable():
    decisions, errors = plan.decide_present(FACTS, present_read(service("envoy-ratelimit", 9090)), SETTINGS, False)
    assert decisions is None
    assert errors == ["Service %s/envoy-ratelimit has no port 8081 (its ports: 9090): set "
                      "teg_istio_prep_ratelimit_service_port to its gRPC port, or teg_istio_prep_ratelimit_service "
                      "to \"\" to leave it alone" % NS]


def test_an_empty_rate_limit_service_name_reads_nothing():
    assert "ratelimit_service" not in plan.read_present(dict(SETTINGS, ratelimit_service=""))
    assert "ratelimit_service" in plan.read_present(SETTINGS)


def test_teardown_takes_app_protocol_off_the_rate_limit_port_only_when_set():
    read = {"ratelimit_service": {"resources": [service("envoy-ratelimit", 8081, appProtocol="tls")]}}
    assert plan.decide_absent(FACTS, read, None, SETTINGS)["ratelimit_port"] is True
    read = {"ratelimit_service": {"resources": [service("envoy-ratelimit", 8081)]}}
    assert plan.decide_absent(FACTS, read, None, SETTINGS)["ratelimit_port"] is False
