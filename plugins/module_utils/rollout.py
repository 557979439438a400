# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What decides a restart and a finished rollout, without the Kubernetes client: shared by the module
rollout_restart and teg_restart's plan (module_utils/_teg_restart/plan.py, restart_pending, which tells
from one read whether the module has anything to do)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.teg.istio.plugins.module_utils.names import (
    image_version,
    pod_serving,
    sidecar_container,
)

# The pod-template annotation that records the trigger of the last restart.
TRIGGER_ANNOTATION = "teg.istio/restart-trigger"
# What Istio's sidecar injector records on every pod it injects (istio/istio pkg/kube/inject/inject.go:
# the injected containers and volumes, and the revision of the istiod that injected it).
INJECTION_STATUS_ANNOTATION = "sidecar.istio.io/status"


def _unique(values):
    seen = set()
    return [v for v in values if not (v in seen or seen.add(v))]


def select_deployments(listed, names, matches):
    """(selected, missing names): the Deployments of `listed` named in `names`, in that order, then
    those of `matches` (what a label selector matched) not already taken, sorted by name."""
    by_name = dict((d["metadata"]["name"], d) for d in listed or [])
    names = _unique(names or [])
    selected = [by_name[name] for name in names if name in by_name]
    missing = [name for name in names if name not in by_name]
    taken = set(d["metadata"]["name"] for d in selected)
    selected.extend(d for d in sorted(matches or [], key=lambda d: d["metadata"]["name"])
                    if d["metadata"]["name"] not in taken)
    return selected, missing


def template_annotations(deployment):
    """The pod-template annotations of a Deployment (a copy)."""
    template = (deployment.get("spec") or {}).get("template") or {}
    return dict((template.get("metadata") or {}).get("annotations") or {})


def wanted_injection(namespace_labels, istiod, pod_annotations):
    """How the pods of the namespace come out of Istio's injector under the settings the restart trigger is
    made of: whether the namespace labels ask for injection and from which revision (`istio-injection=enabled`
    is the default revision; `istio.io/rev` counts only without an `istio-injection` label, as the namespace
    selectors of the injector webhooks in Istio's istiod chart have it), the version of istiod (its image tag, the tag of the proxy it injects) and
    the pod annotations the EnvoyProxy gives Envoy's pods (a None value: not set)."""
    labels = namespace_labels or {}
    if labels.get("istio-injection") == "enabled":
        revision = "default"
    elif "istio-injection" not in labels and labels.get("istio.io/rev"):
        revision = labels["istio.io/rev"]
    else:
        revision = None
    return {"enabled": revision is not None, "revision": revision, "version": (istiod or {}).get("version"),
            "pod_annotations": dict(pod_annotations or {})}


def ambient_injection():
    """How the pods come out of a restart in Istio's ambient mode: with no sidecar. Marked `ambient`, which widens
    already_injected to every selected Deployment (those named too, not only the data plane) and counts one without
    pods as current: in ambient mode only a sidecar to drop is a reason to restart a Deployment without trigger."""
    return {"enabled": False, "revision": None, "version": None, "pod_annotations": {}, "ambient": True}


def deployment_pods(deployment, pods):
    """The serving pods of `pods` (names.pod_serving) that `deployment` selects (matchLabels)."""
    wanted = (((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}).items()
    return [p for p in pods or [] if pod_serving(p)
            and all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in wanted)]


def pod_injected_as(pod, injection):
    """True when `pod` already is what a restart under `injection` (wanted_injection) would make of it: with
    injection on, injected by that revision, its sidecar at istiod's version and the wanted pod annotations
    on it; with injection off, no sidecar at all."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    sidecar = sidecar_container(pod)
    if not injection.get("enabled"):
        return sidecar is None and INJECTION_STATUS_ANNOTATION not in annotations
    try:
        status = json.loads(annotations.get(INJECTION_STATUS_ANNOTATION) or "null") or {}
    except ValueError:
        return False
    if sidecar is None or not isinstance(status, dict) or status.get("revision") != injection.get("revision"):
        return False
    version = injection.get("version")
    if version and image_version(sidecar.get("image")) != version:
        return False
    return all(annotations.get(k) == v for k, v in (injection.get("pod_annotations") or {}).items() if v is not None)


def pods_injected_as(deployment, pods, injection):
    """True when `deployment` has pods (among `pods`) and every one of them is injected as `injection` wants; in
    ambient mode (ambient_injection) a Deployment without pods too, since none of them has a sidecar."""
    mine = deployment_pods(deployment, pods)
    return (bool(mine) or bool(injection.get("ambient"))) and all(pod_injected_as(p, injection) for p in mine)


def already_injected(deployments, pods, injection, trigger_annotation):
    """Names of the `deployments` (those of the data plane) that record no trigger yet but whose pods already
    run as `injection` wants: Envoy Gateway creates the Envoy Deployment of a Gateway made after the last
    restart (expose_app's, in site.yml) with the pod template it renders, so that Deployment never records a
    trigger, while its pods come out of the injector as a restart would make them. In ambient mode
    (ambient_injection) `deployments` are all those selected: one without trigger whose pods have no sidecar is
    already enrolled by ztunnel, with nothing for a restart to change."""
    if injection is None:
        return set()
    return set(d["metadata"]["name"] for d in deployments or []
               if trigger_annotation not in template_annotations(d) and pods_injected_as(d, pods, injection))


def plan_restarts(deployments, trigger, trigger_annotation, force, current=()):
    """Split the selected Deployments into those to restart and those to leave, each with a reason.

    `current`: names of Deployments that record no trigger but whose pods were read as already injected as
    the trigger's settings want (already_injected). They are left alone, and nothing is written to them:
    a trigger written into the pod template is itself a restart, an avoidable traffic event."""
    restart, unchanged = [], []
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        recorded = template_annotations(deployment).get(trigger_annotation)
        if recorded == trigger and not force:
            unchanged.append({"name": name, "reason": "trigger unchanged"})
            continue
        if recorded is None and name in current and not force:
            unchanged.append({"name": name, "reason": "no trigger recorded, its pods already run as the trigger's "
                                                      "settings want"})
            continue
        if force:
            reason = "force"
        elif recorded is None:
            reason = "no trigger recorded yet"
        else:
            reason = "trigger changed"
        restart.append({"name": name, "reason": reason, "previous_trigger": recorded})
    return restart, unchanged


# The first pause of a wait for a rollout. A Deployment on a small cluster rolls out in about a second: a
# first read after the longest pause (2 s by default) made every restart cost 2 s. From this the pauses
# double up to the longest, so that a long wait reads no more often than before.
FIRST_POLL_PAUSE = 0.25


def poll_pauses(longest):
    """The pauses (seconds) between two reads of a wait, without end: FIRST_POLL_PAUSE, doubling up to `longest`,
    then `longest`."""
    pause = min(FIRST_POLL_PAUSE, longest)
    while True:
        yield pause
        pause = min(pause * 2, longest)


def rollout_state(deployment, generation):
    """("done" | "waiting" | "failed", detail) for a Deployment that must have rolled out `generation`.

    The same checks as `kubectl rollout status`, plus the Available condition."""
    if deployment is None:
        return "failed", "deleted while waiting"
    status = deployment.get("status") or {}
    if (status.get("observedGeneration") or 0) < generation:
        return "waiting", "the controller has not observed generation %d yet" % generation
    conditions = dict((c.get("type"), c) for c in status.get("conditions") or [])
    progressing = conditions.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return "failed", "progress deadline exceeded (%s)" % progressing.get("message", "no message")
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    total = status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < wanted:
        return "waiting", "%d of %d replicas updated" % (updated, wanted)
    if total > updated:
        return "waiting", "%d old replica(s) pending termination" % (total - updated)
    if available < updated:
        return "waiting", "%d of %d updated replicas available" % (available, updated)
    available_condition = conditions.get("Available")
    if available_condition and available_condition.get("status") != "True":
        return "waiting", "condition Available is %s (%s)" % (
            available_condition.get("status"), available_condition.get("reason", "no reason"))
    return "done", "rolled out"


def paused_error(deployments, restart, namespace):
    """The one-line refusal when a Deployment to restart is paused, else None: a paused Deployment
    takes the new pod template but never rolls it out, so the wait could only time out."""
    wanted = set(entry["name"] for entry in restart)
    paused = [d["metadata"]["name"] for d in deployments
              if d["metadata"]["name"] in wanted and (d.get("spec") or {}).get("paused")]
    if not paused:
        return None
    return ("cannot restart paused Deployment(s) %s in namespace %s: resume them first "
            "(kubectl -n %s rollout resume deployment/%s) or leave them out of names"
            % (", ".join(paused), namespace, namespace, " deployment/".join(paused)))
