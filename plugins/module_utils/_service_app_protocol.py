# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module service_app_protocol, run in-process by its action plugin or as a module
process (module_utils/_k8s_module.py). It can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import diff_objects
from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    connect,
    TegIstioError,
    api_errors,
    get_or_none,
    without_managed_fields,
)
from ansible_collections.teg.istio.plugins.module_utils.names import FIELD_MANAGER, describe


ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(
    name=dict(type="str", required=True),
    namespace=dict(type="str", required=True),
    port=dict(type="int", default=18000),
    port_name=dict(type="str"),
    app_protocol=dict(type="str", default="tls"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
)
ARGUMENT_CONSTRAINTS = {}


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


def run_with_client(module, client):
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


def run(module):
    return run_with_client(module, connect(module))
