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
from ansible_collections.teg.istio.plugins.module_utils import prior
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


def port_field(entry):
    """The pointer of a port's appProtocol in the record of prior values (module_utils/prior.py), keyed by the
    port's number, which Kubernetes itself uses to merge Service ports: it stays true when the ports are reordered."""
    return prior.pointer("spec", "ports", prior.selector("port", entry["port"]), "appProtocol")


def _annotation_ops(service, value):
    """The RFC 6902 operations that set the record annotation to `value` ("" or None: remove it)."""
    annotations = (service.get("metadata") or {}).get("annotations")
    path = prior.pointer("metadata", "annotations", prior.PRIOR_ANNOTATION)
    if not value:
        if prior.PRIOR_ANNOTATION not in (annotations or {}):
            return []
        return [{"op": "remove", "path": path}]
    if annotations is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": {prior.PRIOR_ANNOTATION: value}}]
    return [{"op": "add", "path": path, "value": value}]


def _port_ops(index, entry, value):
    """The RFC 6902 operations that give port `index` (`entry` as read) the appProtocol `value` (None: none)."""
    base = "/spec/ports/%d" % index
    if value is None:
        return [{"op": "remove", "path": base + "/appProtocol"}] if "appProtocol" in entry else []
    # "add" on an existing object member replaces its value (RFC 6902 section 4.1).
    return [{"op": "add", "path": base + "/appProtocol", "value": value}]


def _version_guard(service):
    """A `test` of the resourceVersion read: the API server refuses the whole patch if the Service changed since,
    so neither the port nor the record can be written over a concurrent change."""
    version = (service.get("metadata") or {}).get("resourceVersion")
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": version}] if version else []


def _port_guard(index, entry):
    """`test` operations that list entry `index` is still the port read, so the write can never be redirected to
    another port or append one."""
    base = "/spec/ports/%d" % index
    guard = [{"op": "test", "path": base + "/port", "value": entry["port"]}]
    for key in ("name", "protocol"):
        if key in entry:
            guard.append({"op": "test", "path": "%s/%s" % (base, key), "value": entry[key]})
    return guard


def _json_patch(service, index, entry, app_protocol):
    """The RFC 6902 operations that give port `index` (`entry`, of `service` as read) appProtocol `app_protocol`,
    recording its prior value on the Service in the same patch; [] when it already has it."""
    if entry.get("appProtocol") == app_protocol:
        return []
    record = prior.record_annotation(service, {port_field(entry): app_protocol})
    ops = _version_guard(service) + _port_guard(index, entry) + _port_ops(index, entry, app_protocol)
    return ops + (_annotation_ops(service, record) if record is not None else [])


def restoring_patch(service):
    """(operations, ports given back as [(port, appProtocol)], pointers left): the RFC 6902 operations that give
    every port of `service` (as read) the appProtocol its record says it had before the collection, where the port
    still has the value the collection set, and remove the record; ([], [], []) without a record. A port someone
    changed since is left as it is."""
    changes, left = prior.restoration(service, fields=lambda field: field.startswith("/spec/ports/"))
    if not changes:
        return [], [], left
    ops, given_back = _version_guard(service), []
    for index, entry in enumerate((service.get("spec") or {}).get("ports") or []):
        field = port_field(entry)
        if field in changes:
            ops += _port_guard(index, entry) + _port_ops(index, entry, changes[field])
            given_back.append((entry, changes[field]))
    record = changes.get(prior.pointer("metadata", "annotations", prior.PRIOR_ANNOTATION))
    return ops + _annotation_ops(service, record), given_back, left


def _noop_message(what, entry, app_protocol):
    port = "%s port %s" % (what, entry["port"]) + (" (%s)" % entry["name"] if entry.get("name") else "")
    return "%s already has appProtocol %s" % (port, app_protocol)


def _restored_message(what, given_back, left):
    gave = ["gave %s port %s %s" % (what, _port_label(entry),
                                    ("appProtocol %s back" % value) if value else "no appProtocol back")
            for entry, value in given_back]
    done = "; ".join(gave) or "%s: removed the record of prior values" % what
    return done + "".join("; left %s (changed since teg.istio set it)" % field for field in left)


def run_with_client(module, client):
    params = module.params
    name, namespace, state = params["name"], params["namespace"], params["state"]
    what = describe("Service", name, namespace)
    with api_errors("read", what):
        service = get_or_none(client, "v1", "Service", name, namespace)
    if service is None:
        if state == "absent":
            return dict(changed=False, msg="%s does not exist; nothing to give back" % what, patch=[])
        raise TegIstioError("%s not found: check the Service name and namespace (this module only changes an "
                            "existing Service)" % what)
    before = without_managed_fields(service)
    if state == "present":
        index, entry = _select_port(service, what, params["port"], params["port_name"])
        patch = _json_patch(service, index, entry, params["app_protocol"])
        noop = _noop_message(what, entry, params["app_protocol"])
        done = "set appProtocol %s on %s port %s" % (params["app_protocol"], what, _port_label(entry))
        left = []
    else:
        # Teardown gives back what the record says, whatever app_protocol is now: a port without a record is the
        # owners' (or set by a version before the record), and is left alone.
        patch, given_back, left = restoring_patch(service)
        noop = "%s has no record of prior appProtocol values; nothing to give back" % what
        done = _restored_message(what, given_back, left)
    for field in left:
        module.warn("%s %s was changed since teg.istio set it; left as it is" % (what, field))
    if not patch:
        result = dict(changed=False, msg=noop, patch=[], result=dict(before=before, after=before))
        if state == "present":
            result["port"] = entry
        return result

    resource = client.resource("Service", "v1")
    with api_errors("patch", what):
        # K8SClient adds dryRun=All in check mode.
        after = client.patch(resource, patch, name=name, namespace=namespace,
                             content_type="application/json-patch+json", field_manager=FIELD_MANAGER).to_dict()
    after = without_managed_fields(after)
    match, diff = diff_objects(before, after)
    result = dict(changed=not match, patch=patch, result=dict(before=before, after=after),
                  msg=("would have " + done + " (server-side dry run)") if module.check_mode else done)
    if state == "present":
        result["port"] = after["spec"]["ports"][index]
    if module._diff:
        result["diff"] = diff
    return result


def run(module):
    return run_with_client(module, connect(module))
