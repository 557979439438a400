"""How the Envoy pods' sidecar outlives Envoy's drain (module_utils/_teg_istio_prep/drain.py), and what the
plan and the teardown of teg_istio_prep make of it (module_utils/_teg_istio_prep/plan.py)."""

import copy
import json

import pytest

from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep import drain as d
from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep import plan
from ansible_collections.teg.istio.plugins.module_utils import prior

NATIVE = "sidecar.istio.io/nativeSidecar"
PROXY_CONFIG = "proxy.istio.io/config"
INBOUND = "traffic.sidecar.istio.io/includeInboundPorts"
WHERE = "EnvoyProxy envoy-gateway-system/teg-envoy-proxy"


def envoyproxy(annotations=None, shutdown=None):
    spec = {"provider": {"type": "Kubernetes",
                         "kubernetes": {"envoyDeployment": {"pod": {"annotations": dict(annotations or {})}}}}}
    if shutdown is not None:
        spec["shutdown"] = shutdown
    return {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
            "metadata": {"name": "teg-envoy-proxy", "namespace": "envoy-gateway-system"}, "spec": spec}


def decide(mode="auto", ep=None, istio="1.29.6", kubernetes="v1.34.4", shutdown=True, annotations=None):
    return d.decide_drain(mode, ep, WHERE, istio, kubernetes, shutdown, annotations or {INBOUND: ""})


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600),
                                           ("2m", 120), ("1m", 60), ("bad", None), ("60", None), (60, None)])
def test_gateway_api_durations(text, seconds):
    assert d.gateway_duration_seconds(text) == seconds


def test_auto_chooses_native_sidecars_where_istio_and_kubernetes_run_them():
    decision, errors = decide()
    assert errors == []
    assert decision["mode"] == "native"
    assert decision["annotations"] == {NATIVE: "true"}
    # The lowest versions that do.
    assert decide(istio="1.24.0", kubernetes="v1.29.0")[0]["annotations"] == {NATIVE: "true"}


@pytest.mark.parametrize("istio, kubernetes, why", [
    ("1.23.4", "v1.34.4", "Istio 1.23"),
    ("1.19.10", "v1.34.4", "Istio 1.19"),
    ("1.29.6", "v1.28.9", "Kubernetes 1.28"),
])
def test_auto_falls_back_to_a_drain_duration_of_envoy_s_default_drain_timeout(istio, kubernetes, why):
    decision, errors = decide(istio=istio, kubernetes=kubernetes)
    assert errors == []
    assert decision["mode"] == "drain_duration"
    assert json.loads(decision["annotations"][PROXY_CONFIG]) == {"terminationDrainDuration": "60s"}
    assert why in decision["reason"]


def test_an_unknown_istio_version_gets_a_drain_duration_only_when_asked_and_native_otherwise():
    # Unknown counts as able: auto then goes native only where nothing says otherwise.
    assert decide(istio=None)[0]["mode"] == "native"
    assert decide(istio=None, kubernetes="v1.28.0")[0]["mode"] == "drain_duration"


def test_the_drain_duration_is_at_least_the_envoyproxy_s_drain_timeout_rounded_up():
    decision, _errors = decide("drain_duration", envoyproxy(shutdown={"drainTimeout": "1m30s"}))
    assert json.loads(decision["annotations"][PROXY_CONFIG]) == {"terminationDrainDuration": "90s"}
    decision, _errors = decide("drain_duration", envoyproxy(shutdown={"drainTimeout": "2500ms"}))
    assert json.loads(decision["annotations"][PROXY_CONFIG]) == {"terminationDrainDuration": "3s"}
    # minDrainDuration alone leaves the default drain timeout.
    decision, _errors = decide("drain_duration", envoyproxy(shutdown={"minDrainDuration": "5s"}))
    assert json.loads(decision["annotations"][PROXY_CONFIG]) == {"terminationDrainDuration": "60s"}


def test_a_proxy_config_already_there_keeps_its_fields_and_a_long_enough_drain():
    mine = "holdApplicationUntilProxyStarts: true\n"
    decision, _errors = decide("drain_duration", envoyproxy({PROXY_CONFIG: mine}))
    assert json.loads(decision["annotations"][PROXY_CONFIG]) == {"holdApplicationUntilProxyStarts": True,
                                                                 "terminationDrainDuration": "60s"}
    # Long enough already: the value as read, so nothing is written.
    longer = "terminationDrainDuration: 120s\n"
    assert decide("drain_duration", envoyproxy({PROXY_CONFIG: longer}))[0]["annotations"] == {PROXY_CONFIG: longer}
    shorter = '{"terminationDrainDuration": "5s"}'
    decision, _errors = decide("drain_duration", envoyproxy({PROXY_CONFIG: shorter}))
    assert json.loads(decision["annotations"][PROXY_CONFIG]) == {"terminationDrainDuration": "60s"}


def test_a_second_decision_on_what_the_first_wrote_is_the_same_value():
    first, _errors = decide("drain_duration")
    again, _errors = decide("drain_duration", envoyproxy(first["annotations"]))
    assert again["annotations"] == first["annotations"]


def test_an_envoyproxy_that_turned_native_sidecars_off_gets_a_drain_duration_in_auto():
    decision, _errors = decide(ep=envoyproxy({NATIVE: "false"}))
    assert decision["mode"] == "drain_duration"
    assert "nativeSidecar" in decision["reason"]


def test_without_spec_shutdown_envoy_does_not_drain_so_auto_adds_nothing():
    # Legacy flavour: Envoy Gateway v0.5 with Istio 1.19.
    decision, errors = decide(istio="1.19.10", kubernetes="v1.34.4", shutdown=False)
    assert errors == []
    assert decision["mode"] == "none" and decision["annotations"] == {}
    assert "spec.shutdown" in decision["reason"]


@pytest.mark.parametrize("kwargs, fragments", [
    ({"mode": "native", "istio": "1.19.10"}, ["native", "Istio 1.19", "set it to auto or drain_duration"]),
    ({"mode": "native", "kubernetes": "v1.27.3"}, ["Kubernetes 1.27", "set it to auto or drain_duration"]),
    ({"mode": "drain_duration", "shutdown": False}, ["no spec.shutdown", "set it to auto or none"]),
    ({"annotations": {PROXY_CONFIG: "{}"}},
     ["teg_istio_prep_pod_annotations sets proxy.istio.io/config", "teg_istio_prep_sidecar_drain to none"]),
    ({"mode": "drain_duration", "ep": envoyproxy(shutdown={"drainTimeout": "soon"})}, [WHERE, "drainTimeout 'soon'"]),
    ({"mode": "drain_duration", "ep": envoyproxy({PROXY_CONFIG: "[1, 2]"})}, [WHERE, "not a YAML mapping"]),
    ({"mode": "drain_duration", "ep": envoyproxy({PROXY_CONFIG: "terminationDrainDuration: 1m"})},
     [WHERE, "terminationDrainDuration '1m'"]),
    ({"mode": "sometimes"}, ["not one of auto, native, drain_duration, none"]),
])
def test_what_cannot_work_is_refused_naming_the_fix(kwargs, fragments):
    decision, errors = decide(**kwargs)
    assert decision is None and len(errors) == 1
    for fragment in fragments:
        assert fragment in errors[0]


def test_none_adds_nothing_and_lets_the_user_set_the_annotations():
    decision, errors = decide("none", annotations={INBOUND: "", NATIVE: "true"})
    assert errors == [] and decision["annotations"] == {}


def test_teardown_takes_back_native_and_only_the_drain_of_a_proxy_config():
    assert d.drain_annotations_after_teardown(envoyproxy({NATIVE: "true"}), WHERE) == ([NATIVE], {})
    assert d.drain_annotations_after_teardown(envoyproxy({NATIVE: "false"}), WHERE) == ([], {})
    alone = envoyproxy({PROXY_CONFIG: '{"terminationDrainDuration":"60s"}'})
    assert d.drain_annotations_after_teardown(alone, WHERE) == ([PROXY_CONFIG], {})
    shared = envoyproxy({PROXY_CONFIG: '{"holdApplicationUntilProxyStarts":true,"terminationDrainDuration":"60s"}'})
    assert d.drain_annotations_after_teardown(shared, WHERE) == (
        [], {PROXY_CONFIG: '{"holdApplicationUntilProxyStarts":true}'})
    assert d.drain_annotations_after_teardown(envoyproxy({PROXY_CONFIG: "[oops"}), WHERE) == ([], {})
    assert d.drain_annotations_after_teardown(None, WHERE) == ([], {})


# The plan around the decision: what step 1 writes, predicts and takes back.
NS = "envoy-gateway-system"
SETTINGS = {
    "state": "present", "namespace": NS, "revision": "", "gatewayclass": "teg", "service": "envoy-gateway",
    "service_port": 18000, "service_port_name": "", "app_protocol": "tls", "ratelimit_service": "",
    "ratelimit_service_port": 8081, "envoyproxy_mode": "auto", "envoyproxy_name": "data-plane-sidecars",
    "pod_annotations": {INBOUND: ""}, "sidecar_drain": "auto", "istio_version": "", "mesh_mode": "sidecar",
}
REF = {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "teg-envoy-proxy", "namespace": NS}


def facts(ep, shutdown=True, istiod_version="1.29.6", kubernetes="v1.34.4"):
    return {
        "kubernetes_version": kubernetes,
        "envoyproxy": {"api_version": "gateway.envoyproxy.io/v1alpha1", "group": "gateway.envoyproxy.io",
                       "pod_annotations": True, "shutdown": shutdown},
        "gateway_api": {"api_version": "gateway.networking.k8s.io/v1"},
        "gatewayclass": {"name": "teg", "parameters_ref": dict(REF), "envoyproxy": ep},
        "istio": {"istiod": {"version": istiod_version, "revision": "default"} if istiod_version else None},
    }


READ = {"namespace": {"resources": [{"metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}}]},
        "service": {"resources": [{"metadata": {"name": "envoy-gateway"},
                                   "spec": {"ports": [{"port": 18000, "appProtocol": "tls"}]}}]},
        "own_envoyproxy": {"resources": []}}


def test_the_plan_adds_the_drain_annotation_to_the_envoyproxy_and_predicts_it():
    decisions, errors = plan.decide_present(facts(envoyproxy({INBOUND: ""})), READ, SETTINGS, False)
    assert errors == []
    [patch] = decisions["objects"]
    assert patch["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"] == {NATIVE: "true"}
    assert decisions["sidecar_drain"]["mode"] == "native"
    predicted = plan.predictions(facts(None), READ, SETTINGS, decisions)
    assert predicted["envoyproxy_pod_annotations"] == {INBOUND: "", NATIVE: "true"}


def test_the_istio_version_set_wins_over_the_running_istiod():
    ep = envoyproxy({INBOUND: ""})
    settings = dict(SETTINGS, istio_version="1.19.10")
    decisions = plan.decide_present(facts(ep, istiod_version="1.29.6"), READ, settings, False)[0]
    assert decisions["sidecar_drain"]["mode"] == "drain_duration"
    # Without it, istiod's tag decides; without either, nothing stops native.
    assert plan.decide_present(facts(ep, istiod_version="1.22.1"), READ, SETTINGS, False)[0]["sidecar_drain"]["mode"] \
        == "drain_duration"
    assert plan.decide_present(facts(ep, istiod_version=None), READ, SETTINGS, False)[0]["sidecar_drain"]["mode"] \
        == "native"


def test_an_envoyproxy_already_carrying_the_drain_annotation_needs_no_write():
    decisions, _errors = plan.decide_present(facts(envoyproxy({INBOUND: "", NATIVE: "true"})), READ, SETTINGS, False)
    assert decisions["objects"] == []


def test_a_refusal_of_the_drain_stops_the_plan():
    settings = dict(SETTINGS, sidecar_drain="native")
    decisions, errors = plan.decide_present(facts(envoyproxy({INBOUND: ""}), kubernetes="v1.28.0"), READ, settings,
                                            False)
    assert decisions is None and "Kubernetes 1.28" in errors[0]


def absent_read():
    return {"namespace": {"resources": []}, "service": {"resources": []}, "owned_envoyproxies": {"resources": []}}


def _with_record(owners, applied):
    """The EnvoyProxy with the pod annotations `applied`, recording that they were `owners` before step 1."""
    ep = envoyproxy(applied)
    ep["metadata"]["annotations"] = {prior.PRIOR_ANNOTATION: prior.record_annotation(envoyproxy(owners), dict(
        (prior.pointer("spec", "provider", "kubernetes", "envoyDeployment", "pod", "annotations", key), value)
        for key, value in applied.items() if (owners or {}).get(key) != value))}
    return ep


def test_teardown_gives_the_drain_annotations_back_with_the_role_s_own():
    ep = _with_record({"team": "a"}, {INBOUND: "", NATIVE: "true", "team": "a"})
    writes, warnings = plan.decide_absent(facts(ep), absent_read(), [ep], dict(SETTINGS, state="absent"))
    [patch] = writes["patches"]
    assert warnings == []
    assert patch["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"] == {
        INBOUND: None, NATIVE: None}
    # The owners' proxy config is given back as it was, whatever the collection wrote into it.
    owners = '{"holdApplicationUntilProxyStarts": true}'
    shared = _with_record({PROXY_CONFIG: owners}, {INBOUND: "", PROXY_CONFIG: '{"holdApplicationUntilProxyStarts":true,'
                                                                              '"terminationDrainDuration":"60s"}'})
    [patch] = plan.decide_absent(facts(shared), absent_read(), [shared], dict(SETTINGS, state="absent"))[0]["patches"]
    assert patch["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"] == {
        INBOUND: None, PROXY_CONFIG: owners}
    # An owners' nativeSidecar "true" the collection found there is not recorded, so it stays.
    ep = _with_record({NATIVE: "true"}, {INBOUND: "", NATIVE: "true"})
    [patch] = plan.decide_absent(facts(ep), absent_read(), [copy.deepcopy(ep)], dict(SETTINGS, state="absent"))[0][
        "patches"]
    assert patch["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"] == {INBOUND: None}
    # Everything it added and nothing else: the whole subtree goes, as before step 1.
    alone = _with_record({}, {INBOUND: "", NATIVE: "true"})
    [patch] = plan.decide_absent(facts(alone), absent_read(), [alone], dict(SETTINGS, state="absent"))[0]["patches"]
    assert patch["spec"]["provider"] == {"type": "Kubernetes", "kubernetes": None}
