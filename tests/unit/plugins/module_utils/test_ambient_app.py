"""Ambient mode (teg_istio_mesh_mode ambient) in the pure logic of expose_app, strict_mtls and verify: the
namespace labels each mode sets and takes back, the routing ambient uses, which pods STRICT would cut off, and
the ambient state verify checks. The API side is covered by tests/integration/test_expose_app.py and
test_strict_mtls.py."""

import copy
import json

import pytest

from ansible_collections.teg.istio.plugins.module_utils._expose_app import changes
from ansible_collections.teg.istio.plugins.module_utils._expose_app.plan import effective_settings
from ansible_collections.teg.istio.plugins.module_utils._strict_mtls import plan as sp
from ansible_collections.teg.istio.plugins.module_utils._strict_mtls import policies as sm
from ansible_collections.teg.istio.plugins.module_utils.verify import verify_config_findings, verify_status_findings

INJECTION = {"istio-injection": "enabled"}
AMBIENT = {"istio.io/dataplane-mode": "ambient"}
BYPASS = "ambient.istio.io/bypass-inbound-capture"
NS = "envoy-gateway-system"


# expose_app

def test_each_mode_sets_its_labels_and_takes_back_the_others():
    assert changes.mode_labels("ambient", INJECTION) == (AMBIENT, INJECTION)
    assert changes.mode_labels("sidecar", INJECTION) == (INJECTION, AMBIENT)


def test_ambient_relabels_an_injected_namespace_and_leaves_a_relabelled_one_alone():
    plan = {"namespaces": ["httpbin", "shop"]}
    found = {"httpbin": {"exists": True, "labels": dict(INJECTION, team="a")},
             "shop": {"exists": True, "labels": dict(AMBIENT, team="b")}}
    labels, unwanted = changes.mode_labels("ambient", INJECTION)
    [patch], errors = changes.namespace_objects(plan, found, labels, unwanted=unwanted)
    assert errors == [] and patch["metadata"]["name"] == "httpbin"
    assert patch["metadata"]["labels"] == {"istio.io/dataplane-mode": "ambient", "istio-injection": None}
    assert json.loads(patch["metadata"]["annotations"]["teg.istio/prior"]) == {
        "/metadata/labels/istio-injection": ["enabled", None], "/metadata/labels/istio.io~1dataplane-mode": [None, "ambient"]}


def test_a_label_someone_set_to_another_value_is_not_taken_back():
    found = {"shop": {"exists": True, "labels": dict(AMBIENT, **{"istio-injection": "disabled"})}}
    labels, unwanted = changes.mode_labels("ambient", INJECTION)
    assert changes.namespace_objects({"namespaces": ["shop"]}, found, labels, unwanted=unwanted) == ([], [])


def test_back_to_sidecar_takes_the_ambient_label_off():
    found = {"httpbin": {"exists": True, "labels": AMBIENT}}
    labels, unwanted = changes.mode_labels("sidecar", INJECTION)
    [patch], _unused = changes.namespace_objects({"namespaces": ["httpbin"]}, found, labels, unwanted=unwanted)
    assert patch["metadata"]["labels"] == {"istio-injection": "enabled", "istio.io/dataplane-mode": None}


def test_a_namespace_created_in_ambient_gets_no_nulls():
    labels, unwanted = changes.mode_labels("ambient", INJECTION)
    [created], _unused = changes.namespace_objects({"namespaces": ["httpbin"]}, {"httpbin": {"exists": False}}, labels,
                                                   "httpbin", unwanted)
    assert created["metadata"]["labels"] == dict(AMBIENT, **{"app.kubernetes.io/managed-by": "teg.istio"})


def test_teardown_in_ambient_takes_the_ambient_label_off():
    record = json.dumps({"/metadata/labels/istio.io~1dataplane-mode": [None, "ambient"]})
    namespaces = [{"metadata": {"name": "shop", "labels": dict(AMBIENT, team="a"),
                                "annotations": {"teg.istio/prior": record}}}]
    assert changes.unlabel_patches(namespaces, ["shop"]) == [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"istio.io/dataplane-mode": None},
                                                               "annotations": {"teg.istio/prior": None}}}]


@pytest.mark.parametrize("mode, routing, effective", [
    ("ambient", "virtualservice", "service"), ("ambient", "service", "service"),
    ("sidecar", "virtualservice", "virtualservice"), ("sidecar", "service", "service")])
def test_ambient_routes_through_the_service(mode, routing, effective):
    settings = {"mesh_mode": mode, "routing": routing}
    assert effective_settings(settings)["routing"] == effective
    assert settings["routing"] == routing


def test_ambient_on_an_envoyproxy_api_without_routing_type_is_refused_naming_the_mode():
    from ansible_collections.teg.istio.plugins.module_utils._expose_app.render import _routing_errors
    settings = {"mesh_mode": "ambient", "routing": "service", "gateway": {"class": "teg"},
                "cluster": {"gateway_api": {"api_version": "gateway.networking.k8s.io/v1beta1"}, "gatewayclass": {"name": "teg"},
                            "envoyproxy": {"api_version": "config.gateway.envoyproxy.io/v1alpha1", "routing_type": False}}}
    [error] = _routing_errors(settings)
    assert error.startswith("ambient mode (it routes through the Service) needs EnvoyProxy spec.routingType")
    assert error.endswith("use sidecar mode (expose_app_mesh_mode: sidecar)")


# strict_mtls

def _pod(namespace, name, labels=None, containers=("app",), phase="Running"):
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": c} for c in containers]}, "status": {"phase": phase}}


def test_ambient_counts_enrolled_and_sidecar_pods_as_meshed():
    pods = [_pod("apps", "by-namespace"), _pod("plain", "by-own-label", AMBIENT),
            _pod("apps", "opted-out", {"istio.io/dataplane-mode": "none"}), _pod("plain", "left-out"),
            _pod("plain", "sidecar", containers=("app", "istio-proxy")), _pod("plain", "done", phase="Succeeded")]
    labels = {"apps": AMBIENT, "plain": {}}
    assert sm.unmeshed_pods(pods, labels) == ["apps/opted-out", "plain/left-out"]
    # Sidecar mode: only the sidecar counts.
    assert sm.unmeshed_pods(pods) == ["apps/by-namespace", "apps/opted-out", "plain/by-own-label", "plain/left-out"]


def test_the_ambient_refusal_names_the_pods_and_how_to_enrol_them():
    line = sm.not_enrolled_error(["plain/left-out"])
    assert "\n" not in line
    assert "1 pod(s) not enrolled in the ambient mesh: plain/left-out" in line
    assert "istio.io/dataplane-mode=ambient" in line and "strict_mtls_force" in line


def test_check_mode_reads_the_labels_the_roles_before_set():
    read = [{"metadata": {"name": NS, "labels": INJECTION}}, {"metadata": {"name": "httpbin"}}]
    predicted = {"namespaces": {"httpbin": AMBIENT},
                 "teg_namespace": {"name": NS, "labels": AMBIENT}}
    assert sp._namespace_labels(read, predicted) == {
        NS: dict(INJECTION, **AMBIENT), "httpbin": AMBIENT}
    assert sp._namespace_labels(read, {"namespaces": {NS: {"istio-injection": None}}})[NS] == {}


# verify

EXPECTED = {
    "teg_namespace": NS, "injection_labels": INJECTION, "service": "envoy-gateway", "service_port": 18000,
    "app_protocol": "tls", "gatewayclass": "teg", "ratelimit_service": "", "ratelimit_service_port": 8081,
    "pod_annotations": {"traffic.sidecar.istio.io/includeInboundPorts": ""},
    "apps": [{"name": "httpbin", "namespace": "httpbin"}], "routing": "virtualservice",
    "gateway": {"name": "apps", "namespace": NS}, "peerauthentication": None,
    "mesh_mode": "ambient", "istio_namespace": "istio-system", "ambient_labelled": [NS, "httpbin"],
}


def _observed():
    route = {"kind": "HTTPRoute", "metadata": {"name": "httpbin", "namespace": "httpbin",
                                               "labels": {"teg.istio/app": "httpbin", "teg.istio/gateway": "apps",
                                                          "teg.istio/gateway-namespace": NS}},
             "spec": {"hostnames": ["www.example.com"], "rules": [{"matches": [
                 {"path": {"type": "PathPrefix", "value": "/httpbin"}}], "backendRefs": [{"name": "httpbin", "port": 8000}]}]}}
    return {
        "teg_namespace": {"metadata": {"name": NS, "labels": AMBIENT}},
        "service": {"spec": {"ports": [{"name": "grpc", "port": 18000, "appProtocol": "tls"}]}},
        "gatewayclass": {"name": "teg", "parameters_ref": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                                           "name": "teg-envoy-proxy", "namespace": NS}},
        "envoyproxy": {"spec": {"routingType": "Service", "provider": {"type": "Kubernetes", "kubernetes": {
            "envoyDeployment": {"pod": {"annotations": {BYPASS: "true"}}}}}}},
        "httproutes": [route], "virtualservices": [],
        "ambient_namespaces": {NS: AMBIENT, "httpbin": AMBIENT},
        "ambient_pods": [_pod(NS, "envoy-gateway-1"), _pod("httpbin", "httpbin-1")],
        "daemonsets": {"ztunnel": {"kind": "DaemonSet"}, "istio-cni-node": {"kind": "DaemonSet"}},
    }


def test_an_ambient_setup_has_no_findings():
    assert verify_config_findings(_observed(), EXPECTED) == []
    # Nor does the status level ask for sidecars (what it says is about the controllers' conditions).
    status = verify_status_findings(dict(_observed(), mesh_pods=_observed()["ambient_pods"]), EXPECTED)
    assert status and not [f for f in status if "sidecar" in f]
    assert [f for f in verify_status_findings(dict(_observed(), mesh_pods=_observed()["ambient_pods"]),
                                              dict(EXPECTED, mesh_mode="sidecar")) if "sidecar" in f]


def test_a_pod_being_deleted_is_not_judged():
    """The old pod of a rollout that just completed (teg_restart into ambient) still runs its sidecar while it
    terminates; its replacement is what serves."""
    observed = _observed()
    old = _pod("httpbin", "old", containers=("app", "istio-proxy"))
    old["metadata"]["deletionTimestamp"] = "2026-12-05T14:00:00Z"
    observed["ambient_pods"].append(old)
    assert verify_config_findings(observed, EXPECTED) == []


def _pod_annotations(observed):
    return observed["envoyproxy"]["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"]


def _vs(labels=None, hosts=("www.example.com",)):
    return {"metadata": {"name": "apps-www.example.com", "namespace": NS, "labels": labels or {}},
            "spec": {"hosts": list(hosts), "gateways": ["mesh"]}}


@pytest.mark.parametrize("mutate, fragment", [
    # (without its pod, which then is not enrolled either: a finding of its own)
    (lambda o: o["ambient_namespaces"].update({NS: {}}) or o["ambient_pods"].pop(0),
     "Namespace envoy-gateway-system has label istio.io/dataplane-mode=None, expected 'ambient': run the "
     "teg_istio_prep role"),
    (lambda o: o["ambient_namespaces"].update({"httpbin": dict(AMBIENT, **{"istio.io/rev": "canary"})}),
     "Namespace httpbin has the sidecar injection label istio.io/rev=canary"),
    (lambda o: o["ambient_pods"].append(_pod("httpbin", "old", containers=("app", "istio-proxy"))),
     "Pod httpbin/old has an istio-proxy sidecar"),
    (lambda o: o["ambient_pods"].append(_pod(NS, "out", {"istio.io/dataplane-mode": "none"})),
     "Pod envoy-gateway-system/out is not enrolled in the ambient mesh"),
    (lambda o: o["envoyproxy"]["spec"].pop("routingType"), "has routingType None, expected 'Service' for ambient mode"),
    (lambda o: _pod_annotations(o).update({"sidecar.istio.io/nativeSidecar": "true"}),
     "sets the sidecar pod annotation sidecar.istio.io/nativeSidecar"),
    # Without the bypass, ztunnel captures the Envoy pods' inbound and refuses the edge's plaintext under STRICT.
    (lambda o: _pod_annotations(o).clear(),
     "EnvoyProxy envoy-gateway-system/teg-envoy-proxy sets pod annotation ambient.istio.io/bypass-inbound-capture="
     "'<unset>', expected 'true' (else ztunnel captures the Envoy pods' inbound and, under STRICT, refuses the "
     "plaintext of clients outside the mesh): run the teg_istio_prep role in ambient mode"),
    (lambda o: _pod_annotations(o).update({BYPASS: "false"}),
     "sets pod annotation ambient.istio.io/bypass-inbound-capture='false', expected 'true'"),
    (lambda o: o["virtualservices"].append(_vs()), "is a mesh VirtualService for the apps"),
    (lambda o: o["virtualservices"].append(_vs({"teg.istio/gateway": "apps", "teg.istio/gateway-namespace": NS},
                                               hosts=("gone.example.com",))), "is a mesh VirtualService for the apps"),
    (lambda o: o["daemonsets"].update(ztunnel=None), "DaemonSet istio-system/ztunnel"),
    (lambda o: o["daemonsets"].pop("istio-cni-node"), "DaemonSet istio-system/istio-cni-node"),
])
def test_each_piece_of_the_ambient_state_is_one_finding_naming_it(mutate, fragment):
    observed = _observed()
    mutate(observed)
    findings = verify_config_findings(observed, EXPECTED)
    assert len(findings) == 1, findings
    assert fragment in findings[0] and "\n" not in findings[0]


def test_another_hosts_virtualservice_is_not_the_apps():
    observed = _observed()
    observed["virtualservices"].append(_vs(hosts=("other.example.com",)))
    assert verify_config_findings(observed, EXPECTED) == []


def test_sidecar_mode_still_expects_the_injection_label():
    expected = dict(copy.deepcopy(EXPECTED), mesh_mode="sidecar")
    assert any("label istio-injection=None, expected 'enabled'" in f
               for f in verify_config_findings(_observed(), expected))
