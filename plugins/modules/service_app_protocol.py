#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: service_app_protocol
short_description: Set appProtocol on one existing port of a Service
version_added: 0.1.0
description:
  - Sets C(appProtocol) on one port of an existing Service, chosen by number or by name, and changes
    nothing else of that port (name, targetPort, protocol) or of the other ports.
  - Its first use is the Envoy Gateway control plane's xDS port, C(envoy-gateway) port 18000, which
    the chart names C(grpc). Istio would treat it as HTTP/2 although it carries mutual TLS;
    C(appProtocol) takes precedence over the port name in Istio's protocol selection.
  - It never adds a port. A missing Service, a missing port, or two ports with the same number (for
    example TCP and UDP) fail with a message naming the Service and its ports.
  - The change is a JSON patch (RFC 6902) whose C(test) operations pin the chosen list entry (its
    index, port number, name and protocol). If the port list changed between the read and the write,
    the API server refuses the patch instead of touching another entry. A strategic-merge patch keyed
    on C(port), as in the manual procedure, would append a new entry in that case, and cannot tell
    18000/TCP from 18000/UDP (kubernetes/kubernetes issues 39188 and 105610).
  - The same patch records the port's prior C(appProtocol) (absent included) in the Service's annotation
    C(teg.istio/prior), keyed by the port's number (C(/spec/ports/[port=18000]/appProtocol)); a rerun keeps the
    first prior value. The annotation is checked by the C(test) of the Service's C(resourceVersion).
author:
  - teg.istio maintainers (@teg-istio)
options:
  name:
    description: Name of the Service.
    type: str
    required: true
  namespace:
    description: Namespace of the Service.
    type: str
    required: true
  port:
    description:
      - Number of the port to change (C(spec.ports[].port)).
      - Ignored when O(port_name) is set.
    type: int
    default: 18000
  port_name:
    description: Name of the port to change (C(spec.ports[].name)); takes precedence over O(port).
    type: str
  app_protocol:
    description: The C(appProtocol) value to set (ignored with O(state=absent)).
    type: str
    default: tls
  state:
    description:
      - V(present) sets C(appProtocol) to O(app_protocol).
      - V(absent) gives every port recorded in C(teg.istio/prior) the C(appProtocol) it had before (removes
        it when it had none) where the port still has the value this module set, warns about a port changed
        since and leaves it, and removes the record. A Service without the record is left alone (its
        C(appProtocol) is the owners', or was set by a version of this collection before the record).
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
    details: Shows the Service before and after the change.
  idempotent:
    support: full
    details: Reads first and sends no request when the port already has the wanted value.
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Declare the Envoy Gateway xDS port as TLS for Istio
  teg.istio.service_app_protocol:
    name: envoy-gateway
    namespace: envoy-gateway-system
    port: 18000
    app_protocol: tls

- name: Choose the port by name instead
  teg.istio.service_app_protocol:
    name: envoy-gateway
    namespace: envoy-gateway-system
    port_name: grpc

- name: Take the declaration away again (teardown)
  teg.istio.service_app_protocol:
    name: envoy-gateway
    namespace: envoy-gateway-system
    state: absent
"""

RETURN = r"""
msg:
  description: What was done, or why nothing was done.
  returned: always
  type: str
  sample: Service envoy-gateway-system/envoy-gateway port 18000 (grpc) already has appProtocol tls
port:
  description: The chosen port entry after the change (as the dry run returned it in check mode).
  returned: with O(state=present)
  type: dict
  sample: {name: grpc, port: 18000, protocol: TCP, targetPort: 18000, appProtocol: tls}
result:
  description: The Service before and after the change, without C(metadata.managedFields).
  returned: success
  type: dict
  contains:
    before:
      description: The Service as read.
      type: dict
    after:
      description: The Service as the API server returned it after the patch (the dry-run result in check mode); the same as C(before) when nothing was changed.
      type: dict
patch:
  description: The JSON patch that was sent; empty when nothing was sent.
  returned: success
  type: list
  elements: dict
diff:
  description: Before and after of what changed.
  returned: when diff mode is on and something changed
  type: dict
"""

from ansible_collections.teg.istio.plugins.module_utils._service_app_protocol import ARGUMENT_CONSTRAINTS, ARGUMENT_SPEC, run
from ansible_collections.teg.istio.plugins.module_utils._k8s_module import run_as_module


def main():
    run_as_module(ARGUMENT_SPEC, run, ARGUMENT_CONSTRAINTS)


if __name__ == "__main__":
    main()
