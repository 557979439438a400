# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the plan of the teg_restart role (step 3: restart the TEG control plane and the
Envoy data plane so that they come back with sidecars). The restart trigger is a hash of what the new
pods must pick up (the namespace's injection labels, the includeInboundPorts annotation, istiod's
revision and version, so that an Istio upgrade restarts TEG once onto the new sidecar); whether
rollout_restart has anything to do is decided with its own rules (module_utils/rollout.py), so that a
run with nothing to restart runs nothing. In ambient mode the trigger is one fixed value (ambient_trigger), and
only a Deployment that records a sidecar-mode trigger or runs a pod with a sidecar is restarted (to drop the
sidecar): ztunnel enrols running pods. The Envoy pods' ambient.istio.io/bypass-inbound-capture (teg_istio_prep) is
not in it either: the istio-cni agent reads it only when a pod is added, and Envoy Gateway rolls the Envoy pods
itself when the EnvoyProxy's pod annotations change. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json

from ansible_collections.teg.istio.plugins.module_utils.names import DRAIN_ANNOTATIONS
from ansible_collections.teg.istio.plugins.module_utils.rollout import (
    TRIGGER_ANNOTATION,
    already_injected,
    ambient_injection,
    paused_error,
    plan_restarts,
    rollout_state,
    select_deployments,
    wanted_injection,
)

INCLUDE_INBOUND = "traffic.sidecar.istio.io/includeInboundPorts"


def trigger(namespace_labels, include_inbound, istiod, drain=None):
    """The restart trigger: sha256 of the JSON (keys sorted) of what the restarted pods pick up. An absent
    annotation (None) and the empty string stay apart. The same value the role computed in YAML before
    (to_json(sort_keys=true) | hash('sha256')), so that an upgrade of the collection restarts nothing.
    `drain`: the sidecar-drain annotations the EnvoyProxy gives the Envoy pods (teg_istio_prep_sidecar_drain,
    module_utils/_teg_istio_prep/drain.py), hashed only when there are any, so that pods restarted
    before they existed are not restarted for nothing."""
    istiod = istiod or {}
    value = {
        "injection": {"istio-injection": (namespace_labels or {}).get("istio-injection"),
                      "istio.io/rev": (namespace_labels or {}).get("istio.io/rev")},
        "includeInboundPorts": include_inbound,
        "istiod": {"revision": istiod.get("revision"), "version": istiod.get("version")},
    }
    if drain:
        value["sidecarDrain"] = drain
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def ambient_trigger():
    """The restart trigger in ambient mode: sha256 of {"dataplaneMode": "ambient"}, as trigger() hashes. It differs
    from every sidecar-mode value (those hash an "injection" key), so that a Deployment restarted in sidecar mode is
    restarted once into ambient mode and once again on the way back; nothing else is in it, since ambient mode
    needs no restart for a new istiod (ztunnel, not a sidecar, carries the traffic)."""
    return hashlib.sha256(json.dumps({"dataplaneMode": "ambient"}, sort_keys=True).encode("utf-8")).hexdigest()


def restart_pending(deployments, names, data_plane, trigger_value, force=False, wait=True,
                    trigger_annotation=TRIGGER_ANNOTATION, current=()):
    """False only when rollout_restart would merely read: every Deployment in `names` exists among
    `deployments` (those of the namespace), none of them or of `data_plane` (those the label selector
    matched, None when off) needs a restart for `trigger_value`, and, with `wait`, each has rolled out its
    current generation. Anything else runs the module: a restart, a rollout still to wait for (so that a
    rerun after a stuck rollout fails again), a missing Deployment to warn about, `force`, or nothing
    selected at all (the module names the missing namespace). `current`: the data-plane Deployments
    without a trigger whose pods already run as wanted (rollout.already_injected), which need no restart."""
    selected, missing = select_deployments(deployments, names, data_plane)
    if force or missing or not selected:
        return True
    restart, _unchanged = plan_restarts(selected, trigger_value, trigger_annotation, False, current)
    if restart:
        return True
    return bool(rolling_out(selected, (), wait))


def reads(settings):
    out = {
        "namespace": {"kind": "Namespace", "api_version": "v1", "name": settings["namespace"]},
        "deployments": {"kind": "Deployment", "api_version": "apps/v1", "namespace": settings["namespace"]},
    }
    if settings["data_plane"]:
        out["data plane"] = {"kind": "Deployment", "api_version": "apps/v1", "namespace": settings["namespace"],
                             "label_selectors": [settings["data_plane_selector"]]}
    if _ambient(settings):
        # Every selected Deployment's pods: one without trigger is restarted only when a pod has a sidecar.
        out["pods"] = {"kind": "Pod", "api_version": "v1", "namespace": settings["namespace"]}
    elif settings["data_plane"]:
        # Its pods: an Envoy Deployment made after the last restart whose pods are already injected needs none.
        out["data plane pods"] = {"kind": "Pod", "api_version": "v1", "namespace": settings["namespace"],
                                  "label_selectors": [settings["data_plane_selector"]]}
    return out


def _ambient(settings):
    return settings["mesh_mode"] == "ambient"


def _pod_annotations(envoyproxy):
    kubernetes = (((envoyproxy or {}).get("spec") or {}).get("provider") or {}).get("kubernetes") or {}
    workload = kubernetes.get("envoyDaemonSet") if kubernetes.get("envoyDaemonSet") is not None else \
        kubernetes.get("envoyDeployment")
    return ((workload or {}).get("pod") or {}).get("annotations") or {}


def _injector(running, predicted):
    """The istiod whose sidecars the restarted pods get: the one istio_install predicts (in check mode, or when
    site.yml plans every role before the first write) when there is none yet or it upgrades that revision in
    place, so that an Istio upgrade shows as a restart before it is made; else the one running."""
    if predicted and (running is None or running.get("revision") == predicted.get("revision")):
        return predicted
    return running


def _sidecar_trigger(facts, namespace, settings, predicted, istiod):
    """(trigger, injection) in sidecar mode: the hash of what the restarted pods pick up, and the same unhashed."""
    labels = (namespace["metadata"].get("labels") or {})
    teg_namespace = predicted.get("teg_namespace") or {}
    if teg_namespace.get("name") == settings["namespace"]:
        labels = teg_namespace["labels"]
    annotations = _pod_annotations((facts.get("gatewayclass") or {}).get("envoyproxy"))
    if "envoyproxy_pod_annotations" in predicted:
        annotations = dict(annotations, **predicted["envoyproxy_pod_annotations"])
    drain = dict((key, annotations[key]) for key in DRAIN_ANNOTATIONS if key in annotations)
    value = trigger(labels, annotations.get(INCLUDE_INBOUND), istiod, drain)
    # The same settings, unhashed: what a restart would make of the pods.
    return value, wanted_injection(labels, istiod, dict(drain, **{INCLUDE_INBOUND: annotations.get(INCLUDE_INBOUND)}))


def decide(facts, read, settings, predicted, check_mode):
    """(decisions, errors, warnings)."""
    namespace = (read["namespace"]["resources"] or [None])[0]
    if namespace is None:
        return None, ["namespace %s not found: install TEG first, or set teg_restart_namespace to the namespace TEG "
                      "runs in" % settings["namespace"]], []
    istiod = _injector(facts["istio"]["istiod"], (predicted.get("istio") or {}).get("istiod"))
    warnings = []
    if settings["require_istiod"] and istiod is None:
        # Alone in check mode, an istio_install before it may only have been predicted; with predictions or
        # when site.yml plans every role, what the roles before it do is known, so it is an error.
        if not check_mode or predicted or settings.get("planning"):
            why = ("ambient mode's ztunnel learns the workloads from it" if _ambient(settings) else
                   "the sidecar injector must exist before the pods restart")
            return None, ["istiod not found in the cluster: run teg.istio.istio_install before teg_restart (%s), or set "
                          "teg_restart_require_istiod: false if the injector runs where cluster_facts cannot see it"
                          % why], []
        warnings.append("istiod not found; in check mode this is expected when istio_install runs before this role, "
                        "but a real run of teg_restart alone would refuse")
    deployments = read["deployments"]["resources"]
    data_plane = read["data plane"]["resources"] if settings["data_plane"] else None
    selected, _missing = select_deployments(deployments, settings["deployments"], data_plane)
    if _ambient(settings):
        value, injection = ambient_trigger(), ambient_injection()
        # Without a trigger, a Deployment whose pods run no sidecar is left alone (already_injected, ambient).
        candidates, pods = selected, read["pods"]["resources"]
    else:
        value, injection = _sidecar_trigger(facts, namespace, settings, predicted, istiod)
        candidates, pods = data_plane, (read.get("data plane pods") or {}).get("resources")
    current = set()
    if candidates and not settings["force"]:
        current = already_injected(candidates, pods, injection, TRIGGER_ANNOTATION)
    restart, _unchanged = plan_restarts(selected, value, TRIGGER_ANNOTATION, settings["force"], current)
    restarts = [entry["name"] for entry in restart]
    # rollout_restart refuses them too, but only after it has patched the others.
    error = paused_error(selected, restart, settings["namespace"])
    if error:
        return None, [error], warnings
    return {
        "trigger": value,
        # What rollout_restart judges Deployments without trigger by: the data plane's in sidecar mode (none when
        # it is off), every selected one's in ambient mode.
        "injection": injection if _ambient(settings) or settings["data_plane"] else None,
        "restart": restart_pending(deployments, settings["deployments"], data_plane, value, settings["force"],
                                   settings["wait"], current=current),
        "restarts": restarts,
        "rolling_out": rolling_out(selected, restarts, settings["wait"]),
    }, [], warnings


def rolling_out(selected, restarts, wait):
    """Names of the `selected` Deployments not among `restarts` whose rollout is still under way, when the
    role waits: rollout_restart waits for them too (a rerun after a run cut off right after its restart), so
    by the next role their pods are those of the current template, as a restart's would be."""
    if not wait:
        return []
    return [d["metadata"]["name"] for d in selected if d["metadata"]["name"] not in restarts
            and rollout_state(d, d["metadata"].get("generation", 0))[0] != "done"]


def plan(view, settings, predicted, check_mode):
    facts = view.facts(gatewayclass=settings["gatewayclass"], parts={"istiod"})
    read = view.read(facts, reads(settings))
    decisions, errors, warnings = decide(facts, read, settings, predicted, check_mode)
    if errors:
        return {"errors": errors, "warnings": warnings}
    return {"errors": [], "warnings": warnings, "writes": decisions, "changes": decisions["restart"],
            # The pods of both come back from the current template before the roles after this one run.
            "predicts": {"restarted": {settings["namespace"]: decisions["restarts"] + decisions["rolling_out"]}}}
