#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rollout_restart
short_description: Restart Deployments when a trigger changed, then wait until they are rolled out
version_added: 0.1.0
description:
  - Does what C(kubectl rollout restart) does (it sets the pod-template annotation
    C(kubectl.kubernetes.io/restartedAt)), but only for the Deployments whose recorded trigger differs
    from O(trigger), so that a second run with the same trigger restarts nothing.
  - The trigger is recorded on the pod template as the annotation O(trigger_annotation). A typical
    trigger is a hash of whatever the new pods must pick up, for example the sidecar-injection settings
    and the Istio revision.
  - Deployments are selected by name (O(names)) and by label (O(label_selector)) in one namespace. A
    named Deployment that does not exist is reported in RV(missing) and skipped, not an error (for
    example C(envoy-ratelimit) when rate limiting is off).
  - All Deployments are patched first, then the module waits for all of them together.
  - Fails before any write when a Deployment to restart is paused (a restart would never roll out).
author:
  - teg.istio maintainers (@teg-istio)
options:
  namespace:
    description:
      - Namespace of the Deployments.
    type: str
    required: true
  names:
    description:
      - Names of Deployments to restart. Missing ones are reported in RV(missing) and skipped.
    type: list
    elements: str
    default: []
  label_selector:
    description:
      - Also restart the Deployments of O(namespace) that match this label selector, for example
        C(app.kubernetes.io/managed-by=envoy-gateway,app.kubernetes.io/component=proxy) for the Envoy
        data-plane Deployments that Envoy Gateway created.
      - At least one of O(names) and O(label_selector) must select something to do anything.
    type: str
  trigger:
    description:
      - The value to record on each pod template. A Deployment whose recorded value equals it is not
        restarted (unless O(force)).
    type: str
    required: true
  trigger_annotation:
    description:
      - The pod-template annotation that records O(trigger).
    type: str
    default: teg.istio/restart-trigger
  force:
    description:
      - Restart every selected Deployment even when its recorded trigger equals O(trigger).
    type: bool
    default: false
  wait:
    description:
      - Wait until every selected Deployment is rolled out and Available (its newest ReplicaSet holds all
        replicas, every one available, no old replica left, generation observed by the controller).
      - This covers Deployments that were not restarted by this run too, so that a rerun after a timed-out
        rollout fails again instead of reporting success while the rollout is still stuck.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for all rollouts together; on timeout the module fails naming each Deployment that
        is not rolled out.
    type: int
    default: 300
  wait_sleep:
    description:
      - Seconds between two reads of the Deployments while waiting (one list request per read).
    type: int
    default: 2
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: full
    details: Patches are sent as server-side dry runs (C(dryRun=All)); nothing is waited for.
  diff_mode:
    support: full
    details: One before/after entry per restarted Deployment, showing its pod-template annotations.
  idempotent:
    support: full
    details: With the same O(trigger) and O(force=false), the second run only reads.
requirements:
  - "python >= 3.9"
  - "kubernetes >= 24.2.0"
  - "PyYAML >= 3.11"
notes:
  - Uses the connection options of kubernetes.core, so C(K8S_AUTH_*) environment variables, a kubeconfig
    and C(module_defaults) for C(group/teg.istio.istio) work as for M(kubernetes.core.k8s).
seealso:
  - module: kubernetes.core.k8s
"""

EXAMPLES = r"""
- name: Restart the TEG control plane and the Envoy data plane when the injection settings changed
  teg.istio.rollout_restart:
    namespace: envoy-gateway-system
    names: [envoy-gateway, envoy-ratelimit, teg-envoy-gateway, teg-redis]
    label_selector: app.kubernetes.io/managed-by=envoy-gateway,app.kubernetes.io/component=proxy
    trigger: "{{ {'istio-injection': 'enabled', 'revision': 'default'} | ansible.builtin.to_json | ansible.builtin.hash('sha256') }}"
    wait_timeout: 600

- name: Restart one Deployment whatever was recorded before, without waiting
  teg.istio.rollout_restart:
    namespace: apps
    names: [httpbin]
    trigger: manual
    force: true
    wait: false
"""

RETURN = r"""
restarted:
  description: The Deployments restarted by this run (in check mode, that would be restarted).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the Deployment.
      type: str
      sample: envoy-gateway
    reason:
      description: Why it was restarted.
      type: str
      sample: trigger changed
    previous_trigger:
      description: The trigger recorded before, null when none was.
      type: str
      sample: null
    before:
      description: The pod-template annotations before the restart.
      type: dict
      sample: {}
    after:
      description: The pod-template annotations after the restart.
      type: dict
      sample: {"kubectl.kubernetes.io/restartedAt": "2026-11-26T13:10:02Z", "teg.istio/restart-trigger": "9f2c..."}
    revision:
      description: The Deployment's C(deployment.kubernetes.io/revision) once rolled out (only with O(wait)).
      type: str
      sample: "2"
  sample: [{"name": "envoy-gateway", "reason": "trigger changed", "previous_trigger": null}]
unchanged:
  description:
    - Selected Deployments that were not restarted, with the reason (their recorded trigger is current).
    - Not named C(skipped), which Ansible reserves for a skipped task.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "teg-redis", "reason": "trigger unchanged"}]
missing:
  description: Names in O(names) with no Deployment in O(namespace), with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "envoy-ratelimit", "reason": "Deployment envoy-gateway-system/envoy-ratelimit not found"}]
msg:
  description: A one-line summary of what was done and why.
  returned: always
  type: str
  sample: "restarted 2 Deployment(s) in envoy-gateway-system: envoy-gateway, teg-redis; all rolled out"
"""

import copy
import time
from datetime import datetime, timezone

from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    NotFoundError,
    TegIstioError,
    api_errors,
)
from ansible_collections.teg.istio.plugins.module_utils.names import describe
from ansible_collections.teg.istio.plugins.module_utils.rollout import (
    TRIGGER_ANNOTATION,
    plan_restarts,
    rollout_state,
    select_deployments,
    template_annotations,
)

RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def _paused_error(deployments, restart, namespace):
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
        selected, missing_names = select_deployments(listed, names, matches)
        missing = [{"name": name, "reason": "%s not found" % describe("Deployment", name, self.namespace)}
                   for name in missing_names]
        if not selected:
            self._require_namespace()
        return selected, missing

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
                after = self.client.patch(self.resource, body, name=name, namespace=self.namespace,
                                          content_type="application/strategic-merge-patch+json").to_dict()
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
        timeout, sleep = self.params["wait_timeout"], max(1, self.params["wait_sleep"])
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
            time.sleep(min(sleep, remaining))


def _run(module, client):
    params = module.params
    if not params["names"] and not params["label_selector"]:
        module.fail_json(msg="rollout_restart needs names or label_selector: nothing would be selected")
    result = {"changed": False, "restarted": [], "unchanged": [], "missing": []}
    try:
        restarter = _Restarter(module, client)
        deployments, result["missing"] = restarter.select()
        for entry in result["missing"]:
            module.warn("%s: skipped" % entry["reason"])
        restart, result["unchanged"] = plan_restarts(deployments, params["trigger"], params["trigger_annotation"],
                                                     params["force"])
        refusal = _paused_error(deployments, restart, params["namespace"])
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
        result["msg"] = str(exc)
        module.fail_json(**result)
    result["msg"] = _summary(params["namespace"], result["restarted"], result["unchanged"], result["missing"],
                             module.check_mode, waited)
    module.exit_json(**result)


def main():
    argument_spec = copy.deepcopy(AUTH_ARG_SPEC)
    argument_spec.update(
        namespace=dict(type="str", required=True),
        names=dict(type="list", elements="str", default=[]),
        label_selector=dict(type="str"),
        trigger=dict(type="str", required=True, no_log=False),
        trigger_annotation=dict(type="str", default=TRIGGER_ANNOTATION),
        force=dict(type="bool", default=False),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=300),
        wait_sleep=dict(type="int", default=2),
    )
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argument_spec, supports_check_mode=True)
    try:
        with api_errors("connect to", "the API server"):
            client = get_api_client(module)
    except CoreException as exc:
        module.fail_from_exception(exc)
    except TegIstioError as exc:
        module.fail_json(msg=str(exc))
    _run(module, client)


if __name__ == "__main__":
    main()
