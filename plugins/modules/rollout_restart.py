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
  injection:
    description:
      - How Istio's injector leaves the pods under the settings O(trigger) is made of, as a dict with C(enabled),
        C(revision) (the injecting istiod's revision, C(default) for C(istio-injection=enabled)), C(version)
        (istiod's version, the tag of the proxy it injects) and C(pod_annotations) (null for one not set).
        The teg_restart role passes what its plan computed.
      - A Deployment matched by O(label_selector) that records no trigger yet, and whose every pod already
        runs that way (an C(istio-proxy) container, C(sidecar.istio.io/status) naming that revision, the proxy
        at that version, those pod annotations; or no sidecar at all when injection is off), is left alone
        and nothing is written to it. Envoy Gateway creates the Envoy Deployment of a Gateway made after the
        restart without the trigger; restarting it on the next run would only disturb traffic.
      - With C(ambient=true) (Istio's ambient mode, no sidecar), every selected Deployment, named or matched, that
        records no trigger and none of whose pods runs a sidecar is left alone, one without pods too; ztunnel
        enrols running pods, so only a sidecar to drop is a reason to restart.
      - The pods are listed only when such a Deployment exists. Without O(injection), every Deployment
        without the trigger is restarted.
    type: dict
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
      - The longest pause, in seconds, between two reads of the Deployments while waiting (one list request per
        read). The first pause is a quarter of a second, each next one twice the one before, up to this.
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

from ansible_collections.teg.istio.plugins.module_utils._rollout_restart import ARGUMENT_CONSTRAINTS, ARGUMENT_SPEC, run
from ansible_collections.teg.istio.plugins.module_utils._k8s_module import run_as_module


def main():
    run_as_module(ARGUMENT_SPEC, run, ARGUMENT_CONSTRAINTS)


if __name__ == "__main__":
    main()
