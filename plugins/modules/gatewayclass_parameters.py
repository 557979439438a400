#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gatewayclass_parameters
short_description: Point a GatewayClass at an EnvoyProxy, or take back a reference it set
version_added: 0.1.0
description:
  - Sets C(spec.parametersRef) of an existing GatewayClass to an existing EnvoyProxy, always with
    C(group), C(kind) and C(namespace). Envoy Gateway up to v1.6 requires the namespace, and up to
    v1.0 also requires the EnvoyProxy to be in Envoy Gateway's own namespace.
  - Finds which API group serves C(envoyproxies) (C(config.gateway.envoyproxy.io) up to Envoy Gateway
    v0.5, C(gateway.envoyproxy.io) from v0.6) and which version serves GatewayClass
    (C(gateway.networking.k8s.io/v1) where served, else C(v1beta1)). Nobody has to name an API
    version.
  - Fails with one line when the GatewayClass or the EnvoyProxy does not exist. Unlike
    C(kubernetes.core.k8s) with C(state=patched), it never skips a missing object silently.
  - Records the reference it replaces (none included) in the same patch, in the GatewayClass's record of prior
    values, the annotation C(teg.istio/prior) (C(/spec/parametersRef) -> C([prior, set])); a later change keeps
    the first prior. With O(state=absent) it puts the replaced reference back (for example TEG's own
    C(teg-envoy-proxy)) where the GatewayClass still references the one it set, and removes the record; a
    reference changed since is left alone.
  - A GatewayClass pointed by a version before that record carries the annotations
    C(teg.istio/parameters-ref) and C(teg.istio/previous-parameters-ref) instead. They are read as the same
    record, so O(state=absent) gives it back all the same, and removed by the next write.
author:
  - teg.istio maintainers (@teg-istio)
options:
  name:
    description: Name of the GatewayClass.
    type: str
    required: true
  envoyproxy_name:
    description: Name of the EnvoyProxy to reference. Required with O(state=present).
    type: str
  envoyproxy_namespace:
    description:
      - Namespace of the EnvoyProxy. Required with O(state=present).
      - On Envoy Gateway up to v1.0 it must be the namespace Envoy Gateway runs in.
    type: str
  envoyproxy_must_exist:
    description:
      - Fail when the EnvoyProxy does not exist.
      - Set it to V(false) only in check mode, when an earlier task of the same run would have created
        the EnvoyProxy. Its creation was then only a dry run, so the object cannot be read back.
    type: bool
    default: true
  state:
    description:
      - V(present) makes the GatewayClass reference the EnvoyProxy.
      - V(absent) removes the reference if this module set it and it is still in place, and restores
        the reference it replaced. Any other reference is left alone.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: full
    details: The patch is sent as a server-side dry run (C(dryRun=All)), so the API server validates it and nothing is stored.
  diff_mode:
    support: full
    details: Shows the GatewayClass before and after the change.
  idempotent:
    support: full
    details: Reads first and sends no request when the reference is already as wanted.
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Point GatewayClass teg at the EnvoyProxy that adds the sidecar annotation
  teg.istio.gatewayclass_parameters:
    name: teg
    envoyproxy_name: data-plane-sidecars
    envoyproxy_namespace: envoy-gateway-system

- name: Take the reference back (restores the one it replaced, if any)
  teg.istio.gatewayclass_parameters:
    name: teg
    state: absent
"""

RETURN = r"""
msg:
  description: What was done, or why nothing was done.
  returned: always
  type: str
parameters_ref:
  description: C(spec.parametersRef) of the GatewayClass after the change, or C(null) when it has none.
  returned: success
  type: dict
  sample: {group: gateway.envoyproxy.io, kind: EnvoyProxy, name: data-plane-sidecars, namespace: envoy-gateway-system}
api_version:
  description: The GatewayClass API version used.
  returned: success
  type: str
  sample: gateway.networking.k8s.io/v1
result:
  description: The GatewayClass before and after the change, without C(metadata.managedFields).
  returned: success
  type: dict
  contains:
    before:
      description: The GatewayClass as read.
      type: dict
    after:
      description:
        - The GatewayClass as the API server returned it after the patch (the dry-run result in check mode).
        - The same as C(before) when nothing was changed.
      type: dict
diff:
  description: Before and after of what changed.
  returned: when diff mode is on and something changed
  type: dict
"""

from ansible_collections.teg.istio.plugins.module_utils._gatewayclass_parameters import ARGUMENT_CONSTRAINTS, ARGUMENT_SPEC, run
from ansible_collections.teg.istio.plugins.module_utils._k8s_module import run_as_module


def main():
    run_as_module(ARGUMENT_SPEC, run, ARGUMENT_CONSTRAINTS)


if __name__ == "__main__":
    main()
