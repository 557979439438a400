"""Pure rendering of the teg_istio_prep role (module_utils/_teg_istio_prep/patches.py): the namespace label
patch and the EnvoyProxy pod-annotation definition, including the {} that lets the role skip the
API call when nothing is to change."""


import json

import pytest

from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep import patches as f
from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep import plan
from ansible_collections.teg.istio.plugins.module_utils.merge_patch import apply_merge_patch
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


ANNOTATION_FIELD = "/spec/provider/kubernetes/envoyDeployment/pod/annotations/traffic.sidecar.istio.io~1includeInboundPorts"


def test_an_existing_envoyproxy_gets_only_what_is_missing_with_its_absence_recorded():
    patch = f.envoyproxy_pod_annotations_patch(tegs_envoyproxy({"keep": "me"}), WANTED, API, "teg-envoy-proxy", NS)
    # A merge patch: logging, replicas and the other annotation are not mentioned, so they stay.
    assert patch == {"apiVersion": API, "kind": "EnvoyProxy", "metadata": {
        "name": "teg-envoy-proxy", "namespace": NS,
        "annotations": {PRIOR: json.dumps({ANNOTATION_FIELD: [None, ""]}, separators=(",", ":"))}},
        "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
            "envoyDeployment": {"pod": {"annotations": {ANNOTATION: ""}}}}}}}


def test_an_envoyproxy_the_collection_created_gets_no_record():
    ours = tegs_envoyproxy({"keep": "me"})
    ours["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "teg.istio"}
    patch = f.envoyproxy_pod_annotations_patch(ours, WANTED, API, "teg-envoy-proxy", NS)
    assert "annotations" not in patch["metadata"]


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


def _applied(obj, patch):
    """`obj` after the definition `patch` sent as a JSON merge patch (RFC 7386), as the API server applies it."""
    return apply_merge_patch(obj, dict((k, v) for k, v in patch.items() if k not in ("apiVersion", "kind")))


def _annotated(owners, wanted, remove=()):
    ep = tegs_envoyproxy(owners) if owners is not None else tegs_envoyproxy()
    patch = f.envoyproxy_pod_annotations_patch(ep, wanted, API, "teg-envoy-proxy", NS, remove=remove)
    return ep, _applied(ep, patch)


# (An owners' empty annotations map is not told from none: teardown leaves no empty map behind.)
@pytest.mark.parametrize("owners", [None, {"team": "a"}, {ANNOTATION: "8080", "team": "a"}, {ANNOTATION: "8080"}])
def test_teardown_gives_the_owners_envoyproxy_back_exactly(owners):
    before, applied = _annotated(owners, WANTED)
    patch, left = f.envoyproxy_restoration(applied, API)
    assert left == []
    restored = _applied(applied, patch)
    # No record left, and no empty map where the collection's annotation was the only one.
    assert restored == dict(before, metadata=dict(before["metadata"], annotations={})) or restored == before
    assert PRIOR not in (restored["metadata"].get("annotations") or {})
    assert restored["spec"] == before["spec"]
    assert f.envoyproxy_restoration(restored, API) == ({}, [])


def test_teardown_leaves_an_annotation_changed_since_and_one_without_a_record():
    _before, applied = _annotated({"team": "a"}, WANTED)
    applied["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"][ANNOTATION] = "9090"
    patch, left = f.envoyproxy_restoration(applied, API)
    assert left == [ANNOTATION_FIELD]
    assert "spec" not in patch and patch["metadata"]["annotations"] == {PRIOR: None}
    # An EnvoyProxy annotated by a version before the record: the annotation may be the owners', so it stays.
    assert f.envoyproxy_restoration(tegs_envoyproxy({ANNOTATION: ""}), API) == ({}, [])


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


def test_the_changed_ports_are_summarised_with_their_record():
    decisions, _errors = plan.decide_present(FACTS, present_read(service("envoy-ratelimit", 8081)), SETTINGS, False)
    [record] = decisions["service_records"]
    assert record["metadata"]["name"] == "envoy-ratelimit"
    assert record_of(record) == {"/spec/ports/[port=8081]/appProtocol": [None, "tls"]}


def test_teardown_gives_back_the_rate_limit_port_only_when_recorded():
    recorded = service("envoy-ratelimit", 8081, appProtocol="tls")
    recorded["metadata"]["annotations"] = {PRIOR: json.dumps({"/spec/ports/[port=8081]/appProtocol": [None, "tls"]})}
    assert plan.decide_absent(FACTS, {"ratelimit_service": {"resources": [recorded]}}, [], SETTINGS)[0][
        "ratelimit_port"] is True
    # tls without a record is the owners' (or an earlier version's): left alone.
    read = {"ratelimit_service": {"resources": [service("envoy-ratelimit", 8081, appProtocol="tls")]}}
    assert plan.decide_absent(FACTS, read, [], SETTINGS)[0]["ratelimit_port"] is False
