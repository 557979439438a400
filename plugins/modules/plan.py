#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plan
short_description: Read the cluster and plan one step of lifting TEG into Istio, without writing
version_added: 0.2.0
description:
  - The first half of every role of this collection (read, plan, apply). It reads everything the role
    needs in one pass, decides in pure Python what the role writes, and returns every problem it finds as
    one line that names the object and the fix. The role then fails once on RV(errors), or applies
    RV(writes).
  - Where only the API server can tell whether an object differs from what is declared (lists that the
    server fills with defaults), it sends the objects as a server-side dry run through
    kubernetes.core's own service layer, exactly what M(kubernetes.core.k8s) would send in check mode,
    and returns only those that differ, with their diffs.
  - Its options are the role's variables, so it is meant to be called by the roles (O(settings) follows
    their C(vars/main.yml)); its result is not a stable interface.
  - Writes nothing. The dry run is a request with C(dryRun=All), which the API server validates and never
    stores.
author:
  - teg.istio maintainers (@teg-istio)
options:
  role:
    description: The role whose step is planned.
    type: str
    required: true
    choices: [expose_app, istio_install, strict_mtls, teg_istio_prep, teg_restart]
  phase:
    description:
      - V(plan) reads and decides before the role writes.
      - V(verify) reads after the role wrote, to check that the step took effect (C(istio_install) waits
        there until istiod serves and its sidecar injector is registered).
    type: str
    choices: [plan, verify]
    default: plan
  settings:
    description: The role's variables, without the role prefix, as the role's C(vars/main.yml) gathers them.
    type: dict
    required: true
  predicted:
    description:
      - What the roles before this one in the same run will have changed by the time this one writes, as
        their plans returned it in RV(predicts). Used only where the cluster does not show it yet (in check
        mode, and when C(site.yml) plans every role before the first write).
    type: dict
    default: {}
  secrets:
    description:
      - Settings that must not be shown (for C(istio_install), the chart repository password), merged into O(settings);
        their values are masked in the task's output.
    type: dict
    default: {}
  planning:
    description:
      - Set by C(site.yml) when it plans every role before the first write. In check mode a role planned alone
        only warns about what a role before it may have predicted (istiod, the Istio APIs); while planning, what
        the roles before it do is known from O(predicted), so it is an error.
    type: bool
    default: false
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: full
    details: Only reads (and dry-runs), so it runs the same way in check mode.
  diff_mode:
    support: full
    details: Returns the diff of each object the dry run found different.
  idempotent:
    support: full
    details: Only reads.
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Read the cluster and plan step 1 of the procedure
  teg.istio.plan:
    role: teg_istio_prep
    settings:
      state: present
      namespace: envoy-gateway-system
      revision: ""
      gatewayclass: teg
      service: envoy-gateway
      service_port: 18000
      service_port_name: ""
      app_protocol: tls
      envoyproxy_mode: auto
      envoyproxy_name: data-plane-sidecars
      pod_annotations: {"traffic.sidecar.istio.io/includeInboundPorts": ""}
  register: __plan

- name: Stop on what the plan found
  ansible.builtin.fail:
    msg: "{{ __plan.errors | join('; ') }}"
  when: __plan.errors | length > 0
"""

RETURN = r"""
errors:
  description: One line per problem that stops the role, naming the object and the fix; empty when none.
  returned: always
  type: list
  elements: str
  sample: ["namespace no-such-ns not found: set teg_istio_prep_namespace to the namespace TEG (Envoy Gateway) is installed in"]
writes:
  description: What the role applies, by name (the role's C(tasks/apply.yml) reads it); empty batches mean nothing to do.
  returned: when RV(errors) is empty
  type: dict
predicts:
  description: What this step leaves for the later roles to see, before it is written (passed on as O(predicted)).
  returned: when RV(errors) is empty
  type: dict
diff:
  description: Before and after of each object the dry run found different.
  returned: in diff mode, when something differs
  type: list
  elements: dict
"""

from ansible_collections.teg.istio.plugins.module_utils._plan import ARGUMENT_CONSTRAINTS, ARGUMENT_SPEC, run
from ansible_collections.teg.istio.plugins.module_utils._k8s_module import run_as_module


def main():
    run_as_module(ARGUMENT_SPEC, run, ARGUMENT_CONSTRAINTS)


if __name__ == "__main__":
    main()
