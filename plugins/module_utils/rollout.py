# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What decides a restart and a finished rollout, without the Kubernetes client: shared by the module
rollout_restart and teg_restart's plan (module_utils/_teg_restart/plan.py, restart_pending, which tells
from one read whether the module has anything to do)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# The pod-template annotation that records the trigger of the last restart.
TRIGGER_ANNOTATION = "teg.istio/restart-trigger"


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


def plan_restarts(deployments, trigger, trigger_annotation, force):
    """Split the selected Deployments into those to restart and those to leave, each with a reason."""
    restart, unchanged = [], []
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        recorded = template_annotations(deployment).get(trigger_annotation)
        if recorded == trigger and not force:
            unchanged.append({"name": name, "reason": "trigger unchanged"})
            continue
        if force:
            reason = "force"
        elif recorded is None:
            reason = "no trigger recorded yet"
        else:
            reason = "trigger changed"
        restart.append({"name": name, "reason": reason, "previous_trigger": recorded})
    return restart, unchanged


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
