#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: k8s_objects
short_description: Create, patch or delete a list of Kubernetes objects, as kubernetes.core.k8s does
version_added: 0.1.0
description:
  - Sends each object of O(definition) the way M(kubernetes.core.k8s) does with the same options. It runs the same
    runner of the C(kubernetes.core) collection, so the requests, results and failure messages are the same.
  - It exists for speed. The roles' writes of the Gateway, routes, VirtualServices, PeerAuthentications, namespace
    labels and EnvoyProxy annotations go through it, so that on the controller they run inside C(ansible-playbook)
    (see the notes) instead of in a module process that spends about a second importing the Kubernetes client.
  - Only the options the roles use are offered; for anything else use M(kubernetes.core.k8s).
author:
  - teg.istio maintainers (@teg-istio)
options:
  definition:
    description:
      - The objects, each a complete definition with C(apiVersion), C(kind) and C(metadata.name)
        (and C(metadata.namespace) for a namespaced kind).
      - At least one of O(definition) and O(absent_definitions) is needed.
    type: list
    elements: dict
  absent_definitions:
    description:
      - Objects to create, given like O(definition), that the caller has just read as absent (in a list of their
        kind and namespace, for example). Each is created with one request, after the objects of O(definition),
        without the read M(kubernetes.core.k8s) sends before each write.
      - One that exists by the time it is created (the API server answers 409 AlreadyExists) is read and patched as
        the objects of O(definition) are.
      - Only with O(state=present). The results follow those of O(definition), in order.
    type: list
    elements: dict
  state:
    description:
      - V(present) creates an object that is missing and patches one that differs (O(merge_type)).
      - V(patched) patches objects that exist and leaves missing ones alone.
      - V(absent) deletes them (with O(wait), until they are gone).
    type: str
    choices: [present, absent, patched]
    default: present
  merge_type:
    description:
      - The patch type for objects that exist, as in M(kubernetes.core.k8s); a custom resource takes V(merge) only.
      - Unset, a strategic merge is tried first and a JSON merge patch then.
    type: list
    elements: str
    choices: [merge, strategic-merge]
  hidden_fields:
    description:
      - Fields left out of the returned objects and of the diff, such as V(metadata.managedFields).
    type: list
    elements: str
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - kubernetes.core.k8s_wait_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: full
    details: Every write is sent as a server-side dry run (C(dryRun=All)), so the API server validates it and nothing is stored.
  diff_mode:
    support: full
    details: As M(kubernetes.core.k8s), each object's diff in its result.
  idempotent:
    support: full
    details: An object that already matches is not patched (kubernetes.core's comparison of the dry-run result with the object read).
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
seealso:
  - module: kubernetes.core.k8s
"""

EXAMPLES = r"""
- name: Label a namespace for sidecar injection and create a Gateway
  teg.istio.k8s_objects:
    merge_type: [merge]
    definition:
      - apiVersion: v1
        kind: Namespace
        metadata:
          name: httpbin
          labels:
            istio-injection: enabled
      - apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata:
          name: apps
          namespace: envoy-gateway-system
        spec:
          gatewayClassName: teg
          listeners:
            - {name: http, port: 80, protocol: HTTP}

- name: Delete them and wait until they are gone
  teg.istio.k8s_objects:
    state: absent
    wait: true
    definition:
      - {apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, metadata: {name: apps, namespace: envoy-gateway-system}}
"""

RETURN = r"""
result:
  description:
    - With one object, the object as the API server returned it (the dry-run result in check mode).
    - With several, C(results), one entry per object in order, each with C(changed), C(method), C(result) and, in diff
      mode, C(diff), as M(kubernetes.core.k8s) returns them.
  returned: success
  type: dict
method:
  description: With one object, what was done to it (C(create), C(update), C(patch), C(delete)).
  returned: success, with one object
  type: str
diff:
  description: With one object in diff mode, its before and after.
  returned: with one object, in diff mode, when it changed
  type: dict
"""

from ansible_collections.teg.istio.plugins.module_utils._k8s_objects import ARGUMENT_CONSTRAINTS, ARGUMENT_SPEC, run
from ansible_collections.teg.istio.plugins.module_utils._k8s_module import run_as_module


def main():
    run_as_module(ARGUMENT_SPEC, run, ARGUMENT_CONSTRAINTS)


if __name__ == "__main__":
    main()
