"""restart_pending (module_utils/_teg_restart/plan.py): the role starts rollout_restart only when the
module would restart or wait for something. The restarts themselves are covered by
tests/integration/test_teg_restart.py."""

import itertools
import json

import pytest

from ansible_collections.teg.istio.plugins.module_utils._teg_restart.plan import (
    ambient_trigger,
    decide,
    plan,
    reads,
    restart_pending,
    trigger,
)
from ansible_collections.teg.istio.plugins.module_utils.rollout import (
    TRIGGER_ANNOTATION,
    already_injected,
    ambient_injection,
    plan_restarts,
    poll_pauses,
    wanted_injection,
)

TRIGGER = "abc"


def deployment(name, trigger=TRIGGER, generation=2, observed=2, replicas=1, updated=1, available=1, total=1):
    annotations = {"teg.istio/restart-trigger": trigger} if trigger is not None else {}
    return {"metadata": {"name": name, "generation": generation},
            "spec": {"replicas": replicas, "template": {"metadata": {"annotations": annotations}}},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available,
                       "replicas": total, "conditions": [{"type": "Available", "status": "True"}]}}


NAMES = ["envoy-gateway", "teg-redis"]
SETTLED = [deployment("envoy-gateway"), deployment("teg-redis"), deployment("unrelated", trigger=None)]


def test_nothing_to_do_when_every_deployment_carries_the_trigger_and_is_rolled_out():
    assert restart_pending(SETTLED, NAMES, None, TRIGGER) is False
    assert restart_pending(SETTLED, NAMES, [deployment("envoy-apps")], TRIGGER) is False


def test_a_new_trigger_or_none_recorded_or_force_needs_the_module():
    assert restart_pending(SETTLED, NAMES, None, "other") is True
    assert restart_pending(SETTLED, NAMES, [deployment("envoy-apps", trigger=None)], TRIGGER) is True
    assert restart_pending(SETTLED, NAMES, None, TRIGGER, force=True) is True


def test_a_rollout_still_in_progress_needs_the_module_to_wait_unless_wait_is_off():
    stuck = [deployment("envoy-gateway"), deployment("teg-redis", available=0)]
    assert restart_pending(stuck, NAMES, None, TRIGGER) is True
    assert restart_pending(stuck, NAMES, None, TRIGGER, wait=False) is False
    unobserved = [deployment("envoy-gateway", observed=1), deployment("teg-redis")]
    assert restart_pending(unobserved, NAMES, None, TRIGGER) is True


def test_a_missing_deployment_or_nothing_selected_leaves_the_reporting_to_the_module():
    assert restart_pending(SETTLED, NAMES + ["envoy-ratelimit"], None, TRIGGER) is True
    assert restart_pending([], [], [], TRIGGER) is True


def test_the_trigger_is_the_hash_the_role_computed_before():
    # {...} | to_json(sort_keys=true) | hash('sha256') of the earlier YAML, for the settings of a prepared
    # namespace, the empty includeInboundPorts and istiod 1.29.6: an upgrade of the collection restarts nothing.
    import hashlib
    text = ('{"includeInboundPorts": "", "injection": {"istio-injection": "enabled", "istio.io/rev": null}, '
            '"istiod": {"revision": "default", "version": "1.29.6"}}')
    assert trigger({"istio-injection": "enabled"}, "", {"revision": "default", "version": "1.29.6"}) == \
        hashlib.sha256(text.encode()).hexdigest()
    assert trigger({}, None, None) != trigger({}, "", None)


# --- an Envoy Deployment made after the last restart (rollout.already_injected) ---------------------------

INBOUND = "traffic.sidecar.istio.io/includeInboundPorts"
WANTED = wanted_injection({"istio-injection": "enabled"}, {"revision": "default", "version": "1.29.6"}, {INBOUND: ""})
ENVOY_LABELS = {"gateway.envoyproxy.io/owning-gateway-name": "apps"}


def envoy(name="envoy-apps", trigger=None):
    dep = deployment(name, trigger=trigger)
    dep["spec"]["selector"] = {"matchLabels": ENVOY_LABELS}
    return dep


def pod(revision="default", proxy="docker.io/istio/proxyv2:1.29.6", annotations=None, labels=None,
        deleting=False):
    meta = {"labels": dict(labels or ENVOY_LABELS), "annotations": dict({INBOUND: ""}, **(annotations or {}))}
    containers = [{"name": "envoy", "image": "docker.io/envoyproxy/envoy:distroless-v1.36.0"}]
    if revision is not None:
        meta["annotations"]["sidecar.istio.io/status"] = json.dumps(
            {"initContainers": ["istio-init"], "containers": ["istio-proxy"], "revision": revision})
        containers.append({"name": "istio-proxy", "image": proxy})
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T10:00:00Z"
    return {"metadata": meta, "spec": {"containers": containers}}


def test_injection_wanted_follows_the_webhook_selectors_of_istios_chart():
    assert WANTED == {"enabled": True, "revision": "default", "version": "1.29.6", "pod_annotations": {INBOUND: ""}}
    assert wanted_injection({"istio.io/rev": "canary"}, None, {})["revision"] == "canary"
    # istio-injection wins: the revision webhooks require it absent.
    assert wanted_injection({"istio-injection": "enabled", "istio.io/rev": "canary"}, None, {})["revision"] == "default"
    assert wanted_injection({"istio-injection": "disabled", "istio.io/rev": "canary"}, None, {})["enabled"] is False
    assert wanted_injection({}, None, {})["enabled"] is False


def test_a_deployment_without_trigger_whose_pods_are_injected_as_wanted_is_current():
    assert already_injected([envoy()], [pod()], WANTED, TRIGGER_ANNOTATION) == {"envoy-apps"}
    # A pod on its way out does not count; the ones left decide.
    assert already_injected([envoy()], [pod(), pod(revision=None, deleting=True)], WANTED, TRIGGER_ANNOTATION) == \
        {"envoy-apps"}


@pytest.mark.parametrize("pods", [
    [],  # no pod to tell by
    [pod(revision=None)],  # not injected
    [pod(), pod(revision=None)],  # one of them not injected
    [pod(revision="canary")],  # injected by another revision
    [pod(proxy="docker.io/istio/proxyv2:1.28.0")],  # by an older istiod
    [pod(annotations={INBOUND: "8080"})],  # other pod annotations than the EnvoyProxy gives now
    [pod(labels={"gateway.envoyproxy.io/owning-gateway-name": "other"})],  # another Deployment's pods
], ids=["no-pods", "not-injected", "one-not-injected", "other-revision", "older-proxy", "other-annotations",
        "other-deployment"])
def test_pods_that_differ_from_what_a_restart_makes_need_the_restart(pods):
    assert already_injected([envoy()], pods, WANTED, TRIGGER_ANNOTATION) == set()


def test_a_deployment_that_records_a_trigger_goes_by_the_trigger_alone():
    assert already_injected([envoy(trigger="old")], [pod()], WANTED, TRIGGER_ANNOTATION) == set()
    assert already_injected([envoy()], [pod()], None, TRIGGER_ANNOTATION) == set()


def test_with_injection_off_pods_without_sidecar_are_current():
    off = wanted_injection({}, {"version": "1.29.6"}, {})
    assert already_injected([envoy()], [pod(revision=None)], off, TRIGGER_ANNOTATION) == {"envoy-apps"}
    assert already_injected([envoy()], [pod()], off, TRIGGER_ANNOTATION) == set()


def test_an_injected_data_plane_deployment_without_trigger_needs_no_module_run():
    current = already_injected([envoy()], [pod()], WANTED, TRIGGER_ANNOTATION)
    assert restart_pending(SETTLED, NAMES, [envoy()], TRIGGER, current=current) is False
    # Without the pods' evidence it is restarted, as before; force restarts it anyway.
    assert restart_pending(SETTLED, NAMES, [envoy()], TRIGGER) is True
    assert restart_pending(SETTLED, NAMES, [envoy()], TRIGGER, force=True, current=current) is True
    restart, unchanged = plan_restarts([envoy()], TRIGGER, TRIGGER_ANNOTATION, False, current)
    assert restart == [] and unchanged[0]["name"] == "envoy-apps"
    assert plan_restarts([envoy()], TRIGGER, TRIGGER_ANNOTATION, True, current)[0][0]["reason"] == "force"


def test_the_plan_leaves_an_injected_envoy_deployment_alone_and_restarts_a_stale_one():
    """decide() as teg_restart's plan runs it, from one read: the control plane carries the trigger of these
    settings, Envoy Gateway made envoy-apps after the restart (no trigger; its pods injected as wanted) and
    envoy-old before (no trigger; its pods without sidecar)."""
    labels = {"istio-injection": "enabled"}
    istiod = {"revision": "default", "version": "1.29.6"}
    value = trigger(labels, "", istiod)
    facts = {"istio": {"istiod": istiod}, "gatewayclass": {"envoyproxy": {"spec": {"provider": {"kubernetes": {
        "envoyDeployment": {"pod": {"annotations": {INBOUND: ""}}}}}}}}}
    old_labels = {"gateway.envoyproxy.io/owning-gateway-name": "old"}
    stale = envoy("envoy-old")
    stale["spec"]["selector"] = {"matchLabels": old_labels}
    data_plane = [envoy(), stale]
    read = {"namespace": {"resources": [{"metadata": {"name": "envoy-gateway-system", "labels": labels}}]},
            "deployments": {"resources": [deployment(n, trigger=value) for n in NAMES] + data_plane},
            "data plane": {"resources": data_plane},
            "data plane pods": {"resources": [pod(), pod(revision=None, labels=old_labels)]}}
    settings = {"namespace": "envoy-gateway-system", "deployments": NAMES, "data_plane": True, "force": False,
                "wait": True, "require_istiod": True, "mesh_mode": "sidecar"}
    decisions, errors, _warnings = decide(facts, read, settings, {}, False)
    assert errors == []
    assert decisions["restarts"] == ["envoy-old"] and decisions["restart"] is True
    assert decisions["injection"] == WANTED
    read["data plane"]["resources"] = [envoy()]
    read["deployments"]["resources"] = [deployment(n, trigger=value) for n in NAMES] + [envoy()]
    decisions, errors, _warnings = decide(facts, read, settings, {}, False)
    assert decisions["restarts"] == [] and decisions["restart"] is False
    forced, _errors, _warnings = decide(facts, read, dict(settings, force=True), {}, False)
    assert forced["restarts"] == NAMES + ["envoy-apps"]


def test_a_rollout_under_way_is_predicted_as_restarted_when_the_role_waits_for_it():
    """A rerun after a run cut off right after it restarted envoy-gateway: the trigger is current, the rollout not
    done, the old pod (no sidecar) still serving. The role waits for that rollout, so site.yml's plan tells
    strict_mtls (predicts.restarted) that those pods come back from the current template; without the wait,
    nothing is predicted and STRICT's safety check judges the pods as they are."""
    labels = {"istio-injection": "enabled"}
    istiod = {"revision": "default", "version": "1.29.6"}
    value = trigger(labels, None, istiod)
    facts = {"istio": {"istiod": istiod}, "gatewayclass": {"envoyproxy": None}}
    deployments = [deployment("envoy-gateway", trigger=value, generation=3, observed=2), deployment("teg-redis", trigger=value)]
    read = {"namespace": {"resources": [{"metadata": {"name": "envoy-gateway-system", "labels": labels}}]},
            "deployments": {"resources": deployments}}
    settings = {"namespace": "envoy-gateway-system", "deployments": NAMES, "data_plane": False, "force": False,
                "wait": True, "require_istiod": True, "mesh_mode": "sidecar",
                "gatewayclass": "teg", "data_plane_selector": ""}

    class View:
        def facts(self, **_kwargs):
            return facts

        def read(self, _facts, _reads):
            return read

    planned = plan(View(), settings, {}, True)
    assert planned["errors"] == [] and planned["writes"]["restarts"] == []
    assert planned["writes"]["restart"] is True
    assert planned["predicts"] == {"restarted": {"envoy-gateway-system": ["envoy-gateway"]}}
    unwaited = plan(View(), dict(settings, wait=False), {}, True)
    assert unwaited["writes"]["restart"] is False
    assert unwaited["predicts"] == {"restarted": {"envoy-gateway-system": []}}


def test_the_sidecar_drain_annotation_changes_the_trigger_and_what_the_pods_must_carry():
    """teg_istio_prep_sidecar_drain's annotation on the EnvoyProxy (its value or its arrival) restarts the TEG
    Deployments once, and an Envoy pod without it is not taken for one injected as wanted; without any, the
    trigger is the one of before, so an upgrade of the collection alone restarts nothing."""
    labels = {"istio-injection": "enabled"}
    istiod = {"revision": "default", "version": "1.29.6"}
    before = trigger(labels, "", istiod)
    assert trigger(labels, "", istiod, {}) == before
    native = trigger(labels, "", istiod, {"sidecar.istio.io/nativeSidecar": "true"})
    drain = trigger(labels, "", istiod, {"proxy.istio.io/config": '{"terminationDrainDuration":"60s"}'})
    assert len({before, native, drain}) == 3
    annotations = {INBOUND: "", "sidecar.istio.io/nativeSidecar": "true"}
    facts = {"istio": {"istiod": istiod}, "gatewayclass": {"envoyproxy": {"spec": {"provider": {"kubernetes": {
        "envoyDeployment": {"pod": {"annotations": annotations}}}}}}}}
    read = {"namespace": {"resources": [{"metadata": {"name": "envoy-gateway-system", "labels": labels}}]},
            "deployments": {"resources": [deployment(n, trigger=before) for n in NAMES] + [envoy()]},
            "data plane": {"resources": [envoy()]},
            "data plane pods": {"resources": [pod()]}}
    settings = {"namespace": "envoy-gateway-system", "deployments": NAMES, "data_plane": True, "force": False,
                "wait": True, "require_istiod": True, "mesh_mode": "sidecar"}
    decisions, errors, _warnings = decide(facts, read, settings, {}, False)
    assert errors == []
    assert decisions["trigger"] == native
    assert decisions["injection"]["pod_annotations"] == annotations
    # The pod of envoy-apps lacks the annotation: restarted with the control plane.
    assert decisions["restarts"] == NAMES + ["envoy-apps"]
    # Predicted by teg_istio_prep's plan before it is written: the same.
    facts["gatewayclass"]["envoyproxy"] = None
    predicted, _errors, _warnings = decide(facts, read, settings, {"envoyproxy_pod_annotations": annotations}, False)
    assert predicted["trigger"] == native


def test_an_istio_upgrade_istio_install_predicts_changes_the_trigger_before_it_is_made():
    """In check mode and in site.yml's planning, istiod is still at the old version; istio_install's prediction
    of an upgrade of that revision decides the trigger, so the upgrade shows as a restart of TEG. A new revision
    beside it does not take the running one's place, and a real run (no prediction) goes by what runs."""
    labels = {"istio-injection": "enabled"}
    running = {"namespace": "istio-system", "name": "istiod", "revision": "default", "version": "1.29.6"}
    upgraded = dict(running, version="1.30.0")
    facts = {"istio": {"istiod": running}, "gatewayclass": {}}
    read = {"namespace": {"resources": [{"metadata": {"name": "envoy-gateway-system", "labels": labels}}]},
            "deployments": {"resources": [deployment(n, trigger=trigger(labels, None, running)) for n in NAMES]},
            "data plane": {"resources": []}, "data plane pods": {"resources": []}}
    settings = {"namespace": "envoy-gateway-system", "deployments": NAMES, "data_plane": True, "force": False,
                "wait": True, "require_istiod": True, "mesh_mode": "sidecar"}
    same, _errors, _warnings = decide(facts, read, settings, {}, True)
    assert same["restart"] is False and same["restarts"] == []
    predicted = {"istio": {"istiod": upgraded}}
    planned, errors, _warnings = decide(facts, read, settings, predicted, True)
    assert errors == []
    assert planned["trigger"] == trigger(labels, None, upgraded)
    assert planned["restarts"] == NAMES and planned["injection"]["version"] == "1.30.0"
    canary = {"istio": {"istiod": dict(upgraded, name="istiod-canary", revision="canary")}}
    beside, _errors, _warnings = decide(facts, read, settings, canary, True)
    assert beside["restarts"] == []


# --- ambient mode (teg_restart_mesh_mode: ambient) ----------------------------------------------------------

AMBIENT_SETTINGS = {"namespace": "envoy-gateway-system", "deployments": ["envoy-gateway", "envoy-ratelimit",
                                                                         "teg-envoy-gateway", "teg-redis"],
                    "data_plane": True, "data_plane_selector": "app.kubernetes.io/component=proxy", "force": False,
                    "wait": True, "require_istiod": True, "mesh_mode": "ambient"}
ISTIOD = {"revision": "default", "version": "1.29.6"}
SIDECAR_TRIGGER = trigger({"istio-injection": "enabled"}, "", ISTIOD)


def app(name, trigger=None):
    """A Deployment whose pods carry the label app=<name>."""
    dep = deployment(name, trigger=trigger)
    dep["spec"]["selector"] = {"matchLabels": {"app": name}}
    return dep


def ambient_read(deployments, pods, data_plane=()):
    return {"namespace": {"resources": [{"metadata": {"name": "envoy-gateway-system",
                                                      "labels": {"istio.io/dataplane-mode": "ambient"}}}]},
            "deployments": {"resources": list(deployments) + list(data_plane)},
            "data plane": {"resources": list(data_plane)},
            "pods": {"resources": list(pods)}}


def test_the_ambient_trigger_is_one_fixed_value_apart_from_every_sidecar_one():
    import hashlib
    assert ambient_trigger() == hashlib.sha256(b'{"dataplaneMode": "ambient"}').hexdigest()
    assert ambient_trigger() not in (SIDECAR_TRIGGER, trigger({}, None, None), trigger({}, "", ISTIOD))


def test_ambient_reads_every_pod_of_the_namespace_and_sidecar_mode_only_the_data_plane_s():
    assert "label_selectors" not in reads(AMBIENT_SETTINGS)["pods"]
    assert "data plane pods" not in reads(AMBIENT_SETTINGS)
    sidecar = reads(dict(AMBIENT_SETTINGS, mesh_mode="sidecar"))
    assert "pods" not in sidecar and sidecar["data plane pods"]["label_selectors"] == [
        "app.kubernetes.io/component=proxy"]


def test_ambient_restarts_only_what_carries_a_sidecar_trigger_or_runs_a_sidecar():
    """Moving from sidecar mode: envoy-gateway was restarted into a sidecar (its trigger), envoy-ratelimit has a
    sidecar without trigger; teg-envoy-gateway runs no sidecar and has no trigger, teg-redis already carries the
    ambient trigger, and the Envoy Deployment made after the switch has neither pods with sidecar nor trigger:
    those three are left alone (ztunnel enrols running pods)."""
    deployments = [app("envoy-gateway", SIDECAR_TRIGGER), app("envoy-ratelimit"), app("teg-envoy-gateway"),
                   app("teg-redis", ambient_trigger())]
    pods = [pod(labels={"app": "envoy-gateway"}), pod(labels={"app": "envoy-ratelimit"}),
            pod(revision=None, labels={"app": "teg-envoy-gateway"}), pod(revision=None, labels={"app": "teg-redis"}),
            pod(revision=None)]
    read = ambient_read(deployments, pods, [envoy()])
    facts = {"istio": {"istiod": ISTIOD}, "gatewayclass": {}}
    decisions, errors, _warnings = decide(facts, read, AMBIENT_SETTINGS, {}, False)
    assert errors == []
    assert decisions["trigger"] == ambient_trigger() and decisions["injection"] == ambient_injection()
    assert decisions["restarts"] == ["envoy-gateway", "envoy-ratelimit"] and decisions["restart"] is True
    # After the restart: nothing left to do, and the rollout_restart module is not even run.
    restarted = [app("envoy-gateway", ambient_trigger()), app("envoy-ratelimit", ambient_trigger()),
                 app("teg-envoy-gateway"), app("teg-redis", ambient_trigger())]
    pods = [pod(revision=None, labels={"app": d["metadata"]["name"]}) for d in restarted] + [pod(revision=None)]
    decisions, errors, _warnings = decide(facts, ambient_read(restarted, pods, [envoy()]), AMBIENT_SETTINGS, {}, False)
    assert decisions["restarts"] == [] and decisions["restart"] is False
    forced, _errors, _warnings = decide(facts, ambient_read(restarted, pods, [envoy()]),
                                        dict(AMBIENT_SETTINGS, force=True), {}, False)
    assert forced["restarts"] == AMBIENT_SETTINGS["deployments"] + ["envoy-apps"]


def test_a_fresh_ambient_install_restarts_nothing_not_even_a_deployment_without_pods():
    deployments = [app(name) for name in AMBIENT_SETTINGS["deployments"]]
    pods = [pod(revision=None, labels={"app": name}) for name in AMBIENT_SETTINGS["deployments"][:3]]
    decisions, errors, _warnings = decide({"istio": {"istiod": ISTIOD}, "gatewayclass": {}},
                                          ambient_read(deployments, pods, [envoy()]), AMBIENT_SETTINGS, {}, False)
    assert errors == [] and decisions["restarts"] == [] and decisions["restart"] is False
    # Sidecar mode with injection off still requires pods to call an Envoy Deployment current.
    off = wanted_injection({}, None, {})
    assert already_injected([envoy()], [], off, TRIGGER_ANNOTATION) == set()
    assert already_injected([envoy()], [], ambient_injection(), TRIGGER_ANNOTATION) == {"envoy-apps"}


def test_ambient_to_sidecar_restarts_what_ambient_restarted_into_sidecars():
    labels = {"istio-injection": "enabled"}
    deployments = [app(name, ambient_trigger()) for name in NAMES]
    read = {"namespace": {"resources": [{"metadata": {"name": "envoy-gateway-system", "labels": labels}}]},
            "deployments": {"resources": deployments}}
    settings = dict(AMBIENT_SETTINGS, deployments=NAMES, data_plane=False, mesh_mode="sidecar")
    decisions, errors, _warnings = decide({"istio": {"istiod": ISTIOD}, "gatewayclass": {}}, read, settings, {}, False)
    assert errors == [] and decisions["restarts"] == NAMES
    # Without the data plane, sidecar mode gives rollout_restart no injection to judge by, as before.
    assert decisions["injection"] is None


def test_ambient_still_requires_istiod():
    read = ambient_read([app("envoy-gateway", SIDECAR_TRIGGER)], [])
    decisions, errors, _warnings = decide({"istio": {"istiod": None}, "gatewayclass": {}}, read, AMBIENT_SETTINGS,
                                          {}, False)
    assert decisions is None and errors[0].startswith("istiod not found in the cluster")
    assert "ztunnel learns the workloads from it" in errors[0]


def test_a_wait_reads_again_after_a_quarter_second_then_doubles_the_pause_up_to_the_longest():
    # rollout_restart's wait and istio_install's wait for istiod: a rollout done within a second is seen within a
    # second, and a long wait reads no more often than every `longest` seconds.
    assert list(itertools.islice(poll_pauses(2), 6)) == [0.25, 0.5, 1, 2, 2, 2]
    assert list(itertools.islice(poll_pauses(5), 7)) == [0.25, 0.5, 1, 2, 4, 5, 5]
    assert list(itertools.islice(poll_pauses(0.1), 2)) == [0.1, 0.1]
