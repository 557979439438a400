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
    description: The C(appProtocol) value to set (or, with O(state=absent), to remove).
    type: str
    default: tls
  state:
    description:
      - V(present) sets C(appProtocol) to O(app_protocol).
      - V(absent) removes C(appProtocol) from the port when it equals O(app_protocol), and leaves any
        other value alone.
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
  returned: success
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

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import diff_objects
from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    TegIstioError,
    api_errors,
    get_or_none,
    without_managed_fields,
)
from ansible_collections.teg.istio.plugins.module_utils.names import describe

FIELD_MANAGER = "teg.istio"


def _port_label(entry):
    label = "%s/%s" % (entry.get("port"), entry.get("protocol", "TCP"))
    return "%s %s" % (entry["name"], label) if entry.get("name") else label


def _select_port(service, what, number=None, name=None):
    """(index, entry) of the one port chosen by `name` when given, else by `number`."""
    ports = (service.get("spec") or {}).get("ports") or []
    if name:
        matches = [(i, p) for i, p in enumerate(ports) if p.get("name") == name]
        wanted = "named %s" % name
    else:
        matches = [(i, p) for i, p in enumerate(ports) if p.get("port") == number]
        wanted = "%s" % number
    if not matches:
        have = ", ".join(_port_label(p) for p in ports) or "none"
        raise TegIstioError("%s has no port %s (its ports: %s); this module never adds a port: choose an "
                            "existing one with port or port_name" % (what, wanted, have))
    if len(matches) > 1:
        raise TegIstioError("%s has %d ports %s (%s): choose one with port_name"
                            % (what, len(matches), wanted, ", ".join(_port_label(p) for _index, p in matches)))
    return matches[0]


def _json_patch(index, entry, app_protocol, state):
    """The RFC 6902 operations that bring port `index` to the wanted state; [] when nothing is to do.

    The `test` operations make the API server refuse the whole patch if that list entry is no
    longer the port that was read, so a concurrent change can never redirect the write to another
    port or make it append one."""
    base = "/spec/ports/%d" % index
    guard = [{"op": "test", "path": base + "/port", "value": entry["port"]}]
    for key in ("name", "protocol"):
        if key in entry:
            guard.append({"op": "test", "path": "%s/%s" % (base, key), "value": entry[key]})
    current = entry.get("appProtocol")
    if state == "present":
        if current == app_protocol:
            return []
        # "add" on an existing object member replaces its value (RFC 6902 section 4.1).
        return guard + [{"op": "add", "path": base + "/appProtocol", "value": app_protocol}]
    if current is None or current != app_protocol:
        return []
    return guard + [{"op": "test", "path": base + "/appProtocol", "value": current},
                    {"op": "remove", "path": base + "/appProtocol"}]


def _noop_message(what, entry, app_protocol, state):
    port = "%s port %s" % (what, entry["port"]) + (" (%s)" % entry["name"] if entry.get("name") else "")
    current = entry.get("appProtocol")
    if state == "present":
        return "%s already has appProtocol %s" % (port, app_protocol)
    if current is None:
        return "%s has no appProtocol; nothing to remove" % port
    return "%s has appProtocol %s, not %s; left alone" % (port, current, app_protocol)


def run(module, client):
    params = module.params
    name, namespace, state = params["name"], params["namespace"], params["state"]
    what = describe("Service", name, namespace)
    with api_errors("read", what):
        service = get_or_none(client, "v1", "Service", name, namespace)
    if service is None:
        raise TegIstioError("%s not found: check the Service name and namespace (this module only changes an "
                            "existing Service)" % what)
    index, entry = _select_port(service, what, params["port"], params["port_name"])
    patch = _json_patch(index, entry, params["app_protocol"], state)
    before = without_managed_fields(service)
    if not patch:
        return dict(changed=False, msg=_noop_message(what, entry, params["app_protocol"], state), port=entry,
                    patch=[], result=dict(before=before, after=before))

    resource = client.resource("Service", "v1")
    with api_errors("patch", what):
        # K8SClient adds dryRun=All in check mode.
        after = client.patch(resource, patch, name=name, namespace=namespace,
                             content_type="application/json-patch+json", field_manager=FIELD_MANAGER).to_dict()
    after = without_managed_fields(after)
    match, diff = diff_objects(before, after)
    verb = "set appProtocol %s on" % params["app_protocol"] if state == "present" else "removed appProtocol from"
    result = dict(changed=not match, port=after["spec"]["ports"][index], patch=patch,
                  result=dict(before=before, after=after),
                  msg="%s %s port %s" % (verb, what, _port_label(entry)))
    if module.check_mode:
        result["msg"] = "would have " + result["msg"] + " (server-side dry run)"
    if module._diff:
        result["diff"] = diff
    return result


def main():
    argument_spec = copy.deepcopy(AUTH_ARG_SPEC)
    argument_spec.update(
        name=dict(type="str", required=True),
        namespace=dict(type="str", required=True),
        port=dict(type="int", default=18000),
        port_name=dict(type="str"),
        app_protocol=dict(type="str", default="tls"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argument_spec, supports_check_mode=True)
    try:
        with api_errors("read", "its version and API groups"):
            client = get_api_client(module)
        result = run(module, client)
    except CoreException as e:
        module.fail_from_exception(e)
    except TegIstioError as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
