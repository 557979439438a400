"""teg_istio_prep in ambient mode (teg_istio_prep_mesh_mode: ambient), pure logic of
module_utils/_teg_istio_prep/plan.py and patches.py: the TEG namespace labelled istio.io/dataplane-mode=ambient
without the injection labels, no sidecar annotation on the Envoy pods (those sidecar mode set taken back) but the
bypass of ztunnel's inbound capture, the way back to sidecar mode, and teardown undoing both modes."""

import json

import pytest

from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep import patches
from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep import plan

NS = "envoy-gateway-system"
API = "gateway.envoyproxy.io/v1alpha1"
INBOUND = "traffic.sidecar.istio.io/includeInboundPorts"
NATIVE = "sidecar.istio.io/nativeSidecar"
PROXY_CONFIG = "proxy.istio.io/config"
AMBIENT = {"istio.io/dataplane-mode": "ambient"}
BYPASS = "ambient.istio.io/bypass-inbound-capture"

SETTINGS = {
    "state": "present", "namespace": NS, "revision": "", "gatewayclass": "teg", "service": "envoy-gateway",
    "service_port": 18000, "service_port_name": "", "app_protocol": "tls", "ratelimit_service": "",
    "ratelimit_service_port": 8081, "envoyproxy_mode": "auto", "envoyproxy_name": "data-plane-sidecars",
    "pod_annotations": {INBOUND: ""}, "sidecar_drain": "auto", "istio_version": "", "mesh_mode": "ambient",
}
OWN_REF = {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "data-plane-sidecars", "namespace": NS}
TEG_REF = {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "teg-envoy-proxy", "namespace": NS}


def namespace(**labels):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": dict(labels)}}


PRIOR = "teg.istio/prior"


def envoyproxy(name, annotations=None, **extra):
    kubernetes = dict(extra)
    if annotations is not None:
        kubernetes["envoyDeployment"] = {"pod": {"annotations": dict(annotations)}}
    spec = {"provider": {"type": "Kubernetes", "kubernetes": kubernetes}} if kubernetes else {}
    return {"apiVersion": API, "kind": "EnvoyProxy", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def facts(ref=None, referenced=None, routing_type=True):
    return {
        "kubernetes_version": "v1.34.4",
        "envoyproxy": {"api_version": API, "group": "gateway.envoyproxy.io", "pod_annotations": True,
                       "shutdown": True, "routing_type": routing_type},
        "gateway_api": {"api_version": "gateway.networking.k8s.io/v1"},
        "gatewayclass": {"name": "teg", "parameters_ref": ref, "envoyproxy": referenced},
        "istio": {"istiod": {"version": "1.29.6", "revision": "default"}},
    }


def read(ns, own=None):
    return {"namespace": {"resources": [ns]},
            "service": {"resources": [{"metadata": {"name": "envoy-gateway"},
                                       "spec": {"ports": [{"port": 18000, "appProtocol": "tls"}]}}]},
            "own_envoyproxy": {"resources": [own] if own else []}}


def by_kind(decisions):
    return dict((o["kind"], o) for o in decisions["objects"])


def test_ambient_labels_the_namespace_for_ztunnel_and_takes_both_injection_labels_off():
    patch, _error = patches.mesh_labels_patch(namespace(**{"istio-injection": "enabled", "istio.io/rev": "canary"}),
                                              mesh_mode="ambient")
    assert patch["metadata"]["labels"] == {"istio.io/dataplane-mode": "ambient", "istio-injection": None,
                                           "istio.io/rev": None}
    # The owners' injection labels are recorded, for teardown to give back.
    assert json.loads(patch["metadata"]["annotations"]["teg.istio/prior"]) == {
        "/metadata/labels/istio-injection": ["enabled", None], "/metadata/labels/istio.io~1rev": ["canary", None],
        "/metadata/labels/istio.io~1dataplane-mode": [None, "ambient"]}
    assert patches.mesh_labels_patch(namespace(team="a", **AMBIENT), mesh_mode="ambient") == ({}, None)


def test_sidecar_mode_takes_back_the_ambient_label_but_not_an_opt_out():
    patch, _error = patches.mesh_labels_patch(namespace(**AMBIENT))
    assert patch["metadata"]["labels"] == {"istio-injection": "enabled", "istio.io/dataplane-mode": None}
    opted_out = patches.mesh_labels_patch(namespace(**{"istio-injection": "enabled", "istio.io/dataplane-mode": "none"}))
    assert opted_out == ({}, None)


def test_teardown_gives_back_the_labels_of_both_modes_as_recorded():
    ambient = namespace()
    ambient["metadata"]["labels"].update(AMBIENT)
    ambient["metadata"]["annotations"] = {"teg.istio/prior": json.dumps(
        {"/metadata/labels/istio.io~1dataplane-mode": [None, "ambient"]})}
    expected = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": NS, "labels": {"istio.io/dataplane-mode": None},
                             "annotations": {"teg.istio/prior": None}}}
    assert patches.mesh_labels_patch(ambient, state="absent") == (expected, None)
    decisions, _warnings = plan.decide_absent(facts(), {"namespace": {"resources": [ambient]}}, [],
                                              dict(SETTINGS, state="absent"))
    assert decisions["patches"] == [expected]


def test_a_fresh_ambient_run_creates_an_envoyproxy_with_only_the_inbound_bypass_and_points_the_class_at_it():
    decisions, errors = plan.decide_present(facts(), read(namespace()), SETTINGS, False)
    assert errors == []
    objects = by_kind(decisions)
    assert objects["Namespace"]["metadata"]["labels"] == {"istio.io/dataplane-mode": "ambient"}
    assert objects["EnvoyProxy"] == {
        "apiVersion": API, "kind": "EnvoyProxy",
        "metadata": {"name": "data-plane-sidecars", "namespace": NS,
                     "labels": {"app.kubernetes.io/managed-by": "teg.istio"}},
        "spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {"pod": {"annotations": {
            BYPASS: "true"}}}}}}}
    assert decisions["pod_annotations"] == {BYPASS: "true"}
    assert decisions["sidecar_drain"]["mode"] == "none"
    assert decisions["gatewayclass"] == {"name": "data-plane-sidecars", "namespace": NS, "must_exist": True}
    predicted = plan.predictions(facts(), read(namespace()), SETTINGS, decisions)
    assert predicted["teg_namespace"]["labels"] == AMBIENT
    assert predicted["envoyproxy_pod_annotations"] == {BYPASS: "true"}


def test_sidecar_to_ambient_takes_back_what_sidecar_mode_set_on_the_envoyproxy_it_created():
    own = envoyproxy("data-plane-sidecars", {INBOUND: "", NATIVE: "true"})
    decisions, errors = plan.decide_present(facts(OWN_REF, own), read(namespace(**{"istio-injection": "enabled"}), own),
                                            SETTINGS, False)
    assert errors == []
    objects = by_kind(decisions)
    assert objects["Namespace"]["metadata"]["labels"] == {"istio.io/dataplane-mode": "ambient", "istio-injection": None}
    # One patch: the bypass in, the sidecar annotations out.
    assert objects["EnvoyProxy"]["spec"] == {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {
        "pod": {"annotations": {BYPASS: "true", INBOUND: None, NATIVE: None}}}}}}
    assert decisions["gatewayclass"] is None


def test_an_ambient_rerun_writes_nothing():
    own = envoyproxy("data-plane-sidecars", {BYPASS: "true"})
    own["spec"]["routingType"] = "Service"
    decisions, errors = plan.decide_present(facts(OWN_REF, own), read(namespace(**AMBIENT), own), SETTINGS, False)
    assert errors == []
    assert decisions["objects"] == [] and decisions["diff"] == []


def test_teg_s_envoyproxy_loses_only_the_sidecar_annotations_and_the_drain_of_its_proxy_config():
    referenced = envoyproxy("teg-envoy-proxy", {
        INBOUND: "", "prometheus.io/scrape": "true",
        PROXY_CONFIG: json.dumps({"holdApplicationUntilProxyStarts": True, "terminationDrainDuration": "60s"})},
        replicas=2)
    decisions, errors = plan.decide_present(facts(TEG_REF, referenced), read(namespace(**AMBIENT)), SETTINGS, False)
    assert errors == []
    assert decisions["mode"] == "merge"
    assert by_kind(decisions)["EnvoyProxy"]["spec"]["provider"]["kubernetes"] == {"envoyDeployment": {"pod": {
        "annotations": {BYPASS: "true", INBOUND: None, PROXY_CONFIG: '{"holdApplicationUntilProxyStarts":true}'}}}}


def test_with_sidecar_drain_none_the_drain_annotations_are_the_user_s_and_stay():
    referenced = envoyproxy("teg-envoy-proxy", {INBOUND: "", NATIVE: "true"})
    decisions, _errors = plan.decide_present(facts(TEG_REF, referenced), read(namespace(**AMBIENT)),
                                             dict(SETTINGS, sidecar_drain="none"), False)
    assert by_kind(decisions)["EnvoyProxy"]["spec"]["provider"]["kubernetes"] == {"envoyDeployment": {"pod": {
        "annotations": {BYPASS: "true", INBOUND: None}}}}


def test_ambient_to_sidecar_puts_the_injection_label_and_the_annotations_back_and_the_bypass_off():
    own = envoyproxy("data-plane-sidecars", {BYPASS: "true"})
    decisions, errors = plan.decide_present(facts(OWN_REF, own), read(namespace(**AMBIENT), own),
                                            dict(SETTINGS, mesh_mode="sidecar"), False)
    assert errors == []
    objects = by_kind(decisions)
    assert objects["Namespace"]["metadata"]["labels"] == {"istio-injection": "enabled", "istio.io/dataplane-mode": None}
    assert objects["EnvoyProxy"]["spec"]["provider"]["kubernetes"] == {"envoyDeployment": {"pod": {"annotations": {
        INBOUND: "", NATIVE: "true", BYPASS: None}}}}


@pytest.mark.parametrize("settings, routing_type, fragments", [
    (dict(SETTINGS, revision="canary"), True,
     ["teg_istio_prep_revision canary chooses a sidecar injector", "set teg_istio_prep_revision to \"\""]),
    (SETTINGS, False,
     ["needs the EnvoyProxy's spec.routingType (Envoy Gateway v1.1 or later)", "teg_istio_prep_mesh_mode to sidecar"]),
])
def test_what_ambient_cannot_do_is_refused_in_one_line(settings, routing_type, fragments):
    decisions, errors = plan.decide_present(facts(routing_type=routing_type), read(namespace()), settings, False)
    assert decisions is None and len(errors) == 1
    assert all(fragment in errors[0] for fragment in fragments), errors


def test_sidecar_mode_does_not_need_routing_type_nor_refuse_a_revision():
    decisions, errors = plan.decide_present(facts(routing_type=False), read(namespace()),
                                            dict(SETTINGS, mesh_mode="sidecar", revision="canary"), False)
    assert errors == []
    assert by_kind(decisions)["Namespace"]["metadata"]["labels"] == {"istio.io/rev": "canary"}


def test_the_bypass_goes_on_an_envoy_daemonset_s_pods_when_envoy_runs_as_one():
    referenced = envoyproxy("teg-envoy-proxy", envoyDaemonSet={})
    decisions, errors = plan.decide_present(facts(TEG_REF, referenced), read(namespace(**AMBIENT)), SETTINGS, False)
    assert errors == []
    assert by_kind(decisions)["EnvoyProxy"]["spec"]["provider"]["kubernetes"] == {"envoyDaemonSet": {"pod": {
        "annotations": {BYPASS: "true"}}}}


def test_sidecar_mode_leaves_an_envoyproxy_without_the_bypass_alone():
    own = envoyproxy("data-plane-sidecars", {INBOUND: "", NATIVE: "true"})
    decisions, errors = plan.decide_present(facts(OWN_REF, own), read(namespace(**{"istio-injection": "enabled"}), own),
                                            dict(SETTINGS, mesh_mode="sidecar"), False)
    assert errors == [] and decisions["objects"] == []


@pytest.mark.parametrize("annotations, left", [
    ({BYPASS: "true", "team": "a"}, {"envoyDeployment": {"pod": {"annotations": {BYPASS: None}}}}),
    # Nothing else was there: the provider reads as before, with no empty maps.
    ({BYPASS: "true"}, None),
    ({BYPASS: "true", INBOUND: "", NATIVE: "true"},
     None),
])
def test_teardown_takes_the_bypass_off_teg_s_envoyproxy_with_the_sidecar_annotations(annotations, left):
    referenced = envoyproxy("teg-envoy-proxy", annotations)
    # What the collection set, recorded as absent before it (the owners' "team" was there).
    referenced["metadata"]["annotations"] = {PRIOR: json.dumps(dict(
        ("/spec/provider/kubernetes/envoyDeployment/pod/annotations/" + key.replace("/", "~1"), [None, value])
        for key, value in annotations.items() if key != "team"))}
    decisions, _warnings = plan.decide_absent(facts(), {"namespace": {"resources": [namespace()]}}, [referenced],
                                              dict(SETTINGS, state="absent"))
    assert decisions["patches"] == [{"apiVersion": API, "kind": "EnvoyProxy",
                                     "metadata": {"name": "teg-envoy-proxy", "namespace": NS,
                                                  "annotations": {PRIOR: None}},
                                     "spec": {"provider": {"type": "Kubernetes", "kubernetes": left}}}]
