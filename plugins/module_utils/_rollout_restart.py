# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module rollout_restart, run in-process by its action plugin or as a module
process (module_utils/_k8s_module.py). It can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import time
from datetime import datetime, timezone

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    connect,
    NotFoundError,
    TegIstioError,
    api_errors,
)
from ansible_collections.teg.istio.plugins.module_utils.names import FIELD_MANAGER, describe
from ansible_collections.teg.istio.plugins.module_utils.rollout import (
    TRIGGER_ANNOTATION,
    already_injected,
    paused_error,
    plan_restarts,
    poll_pauses,
    rollout_state,
    select_deployments,
    template_annotations,
)

RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"

ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(
    namespace=dict(type="str", required=True),
    names=dict(type="list", elements="str", default=[]),
    label_selector=dict(type="str"),
    trigger=dict(type="str", required=True, no_log=False),
    trigger_annotation=dict(type="str", default=TRIGGER_ANNOTATION),
    force=dict(type="bool", default=False),
    injection=dict(type="dict"),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=300),
    wait_sleep=dict(type="int", default=2),
)
ARGUMENT_CONSTRAINTS = {}


def _restart_patch(trigger_annotation, trigger, restarted_at):
    return {"spec": {"template": {"metadata": {"annotations": {
        trigger_annotation: trigger,
        RESTARTED_AT_ANNOTATION: restarted_at,
    }}}}}


def _timeout_message(namespace, pending, timeout):
    names = ", ".join("%s (%s)" % (describe("Deployment", name, namespace), detail)
                      for name, detail in sorted(pending.items()))
    first = sorted(pending)[0]
    return ("rollout not complete after %ds, not Available: %s; see kubectl -n %s describe deployment %s "
            "and the events of its pods, or raise the wait timeout if it is only slow"
            % (timeout, names, namespace, first))


def _failed_message(namespace, failed):
    names = ", ".join("%s (%s)" % (describe("Deployment", name, namespace), detail)
                      for name, detail in sorted(failed.items()))
    return "rollout failed: %s; see kubectl -n %s describe deployment %s" % (names, namespace, sorted(failed)[0])


def _summary(namespace, restarted, unchanged, missing, check_mode, waited):
    parts = []
    if restarted:
        parts.append("%s %d Deployment(s) in %s: %s" % (
            "would restart" if check_mode else "restarted", len(restarted), namespace,
            ", ".join(r["name"] for r in restarted)))
    else:
        parts.append("nothing to restart in %s" % namespace)
    if unchanged:
        parts.append("unchanged trigger: %s" % ", ".join(s["name"] for s in unchanged))
    if missing:
        parts.append("not found: %s" % ", ".join(m["name"] for m in missing))
    if waited:
        parts.append("all rolled out")
    return "; ".join(parts)


class _Restarter:
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.params = module.params
        self.namespace = module.params["namespace"]
        self.matches = []
        with api_errors("discover", "the Deployment API (apps/v1)"):
            self.resource = client.resource("Deployment", "apps/v1")

    def _list(self, label_selector=None):
        what = "Deployments in namespace %s" % self.namespace
        if label_selector:
            what += " matching %s" % label_selector
        params = {"namespace": self.namespace}
        if label_selector:
            params["label_selector"] = label_selector
        with api_errors("list", what):
            return self.client.get(self.resource, **params).to_dict().get("items") or []

    def _require_namespace(self):
        """A missing namespace lists as empty: say so instead of reporting every name as missing."""
        try:
            with api_errors("read", describe("Namespace", self.namespace)):
                self.client.get(self.client.resource("Namespace", "v1"), name=self.namespace)
        except TegIstioError as exc:
            if isinstance(exc.__cause__, NotFoundError):
                raise TegIstioError("namespace %s not found: create it (or install TEG there) first, or set the "
                                    "right namespace" % self.namespace)
            raise

    def select(self):
        """The Deployments to consider (names first, then label matches) and the names not found."""
        names = self.params["names"] or []
        listed = self._list() if names else []
        matches = self._list(self.params["label_selector"]) if self.params["label_selector"] else []
        self.matches = matches
        selected, missing_names = select_deployments(listed, names, matches)
        missing = [{"name": name, "reason": "%s not found" % describe("Deployment", name, self.namespace)}
                   for name in missing_names]
        if not selected:
            self._require_namespace()
        return selected, missing

    def already_injected(self, injection, selected):
        """Names of the label-selected Deployments (in ambient mode: of all `selected`) without a recorded trigger
        whose pods already run as `injection` wants (rollout.already_injected); the pods are listed only when
        there is such a Deployment."""
        annotation = self.params["trigger_annotation"]
        ambient = bool((injection or {}).get("ambient"))
        candidates = selected if ambient else self.matches
        if not injection or not any(annotation not in template_annotations(d) for d in candidates):
            return set()
        selector = None if ambient else self.params["label_selector"]
        what = "Pods in namespace %s" % self.namespace + (" matching %s" % selector if selector else "")
        params = {"namespace": self.namespace}
        if selector:
            params["label_selector"] = selector
        with api_errors("list", what):
            pods = self.client.get(self.client.resource("Pod", "v1"), **params).to_dict().get("items") or []
        return already_injected(candidates, pods, injection, annotation)

    def patch(self, restart, deployments, done):
        """Patch every Deployment to restart, appending each entry to `done` once patched (so that a
        failure half-way still reports what was restarted); returns (name -> generation to wait for,
        diffs)."""
        by_name = dict((d["metadata"]["name"], d) for d in deployments)
        restarted_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = _restart_patch(self.params["trigger_annotation"], self.params["trigger"], restarted_at)
        generations, diffs = {}, []
        for entry in restart:
            name = entry["name"]
            with api_errors("patch", describe("Deployment", name, self.namespace)):
                # K8SClient adds dryRun=All in check mode. The field manager names this collection in the
                # Deployment's managedFields, as the other modules' patches do.
                after = self.client.patch(self.resource, body, name=name, namespace=self.namespace,
                                          content_type="application/strategic-merge-patch+json",
                                          field_manager=FIELD_MANAGER).to_dict()
            entry["before"] = template_annotations(by_name[name])
            entry["after"] = template_annotations(after)
            generations[name] = after["metadata"].get("generation", 0)
            header = describe("Deployment", name, self.namespace)
            diffs.append({"before_header": header, "after_header": header,
                          "before": {"spec": {"template": {"metadata": {"annotations": entry["before"]}}}},
                          "after": {"spec": {"template": {"metadata": {"annotations": entry["after"]}}}}})
            done.append(entry)
        return generations, diffs

    def wait(self, generations):
        """Poll (one list per round) until every Deployment has rolled out `generation`; name -> revision."""
        timeout = self.params["wait_timeout"]
        pauses = poll_pauses(max(1, self.params["wait_sleep"]))
        deadline = time.monotonic() + timeout
        pending, revisions = dict(generations), {}
        while True:
            by_name = dict((d["metadata"]["name"], d) for d in self._list())
            details, failed = {}, {}
            for name, generation in pending.items():
                state, detail = rollout_state(by_name.get(name), generation)
                if state == "done":
                    revisions[name] = by_name[name]["metadata"].get("annotations", {}).get(REVISION_ANNOTATION)
                elif state == "failed":
                    failed[name] = detail
                else:
                    details[name] = detail
            if failed:
                raise TegIstioError(_failed_message(self.namespace, failed))
            pending = dict((name, pending[name]) for name in details)
            if not pending:
                return revisions
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TegIstioError(_timeout_message(self.namespace, details, timeout))
            time.sleep(min(next(pauses), remaining))


def run_with_client(module, client):
    params = module.params
    if not params["names"] and not params["label_selector"]:
        raise TegIstioError("rollout_restart needs names or label_selector: nothing would be selected")
    result = {"changed": False, "restarted": [], "unchanged": [], "missing": []}
    try:
        restarter = _Restarter(module, client)
        deployments, result["missing"] = restarter.select()
        for entry in result["missing"]:
            module.warn("%s: skipped" % entry["reason"])
        current = set() if params["force"] else restarter.already_injected(params["injection"], deployments)
        restart, result["unchanged"] = plan_restarts(deployments, params["trigger"], params["trigger_annotation"],
                                                     params["force"], current)
        refusal = paused_error(deployments, restart, params["namespace"])
        if refusal:
            raise TegIstioError(refusal)
        generations, diffs = restarter.patch(restart, deployments, result["restarted"])
        result["changed"] = bool(restart)
        if module._diff:
            result["diff"] = diffs
        waited = params["wait"] and not module.check_mode and bool(deployments)
        if waited:
            # Those left alone count too: a rerun after a stuck rollout must not report success.
            for deployment in deployments:
                generations.setdefault(deployment["metadata"]["name"], deployment["metadata"].get("generation", 0))
            revisions = restarter.wait(generations)
            for entry in result["restarted"]:
                entry["revision"] = revisions.get(entry["name"])
    except TegIstioError as exc:
        result["changed"] = bool(result["restarted"])
        raise TegIstioError(str(exc), result) from exc
    result["msg"] = _summary(params["namespace"], result["restarted"], result["unchanged"], result["missing"],
                             module.check_mode, waited)
    return result


def run(module):
    return run_with_client(module, connect(module))
