#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: backend_check
short_description: Check the backends of expose_app before anything is written
version_added: 0.1.0
description:
  - Reads, for every namespace the apps use, its Services and Pods in one list request each, and
    checks each app against them - the backend Service exists; the app's port is one of its ports;
    no port of the Service and no container port of the Pods it selects declares HTTP/2 (a port
    name starting with C(http2), or C(appProtocol) C(http2) or C(kubernetes.io/h2c)), which breaks
    the connection between the TEG sidecar and the app sidecar (the TEG and Istio caveat).
  - Objects the same run is about to create (the httpbin sample) are given in O(planned) and are
    checked as if they already existed.
  - Objects the run will write (O(owned)) must be absent or already carry the label
    C(app.kubernetes.io/managed-by=teg.istio), so that the role never overwrites someone else's
    route.
  - Fails with one line naming each object at fault and the fix; never writes.
author:
  - teg.istio maintainers (@teg-istio)
options:
  apps:
    description:
      - The apps to check, as normalized by the C(teg.istio.expose_app_plan) filter.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the app, used in messages.
        type: str
        required: true
      namespace:
        description: Namespace of the backend Service.
        type: str
        required: true
      service:
        description: Name of the backend Service.
        type: str
        required: true
      port:
        description: The Service port the app routes to.
        type: int
        required: true
  planned:
    description:
      - Objects (Services, Deployments) this run creates; a planned Service stands in for a live
        one of the same name, and a planned Deployment's pod template for its Pods.
    type: list
    elements: dict
    default: []
  namespaces:
    description:
      - Further namespaces whose existence and labels to report in RV(namespaces).
    type: list
    elements: str
    default: []
  owned:
    description:
      - Objects the run will write, each with C(api_version), C(kind), C(namespace) and C(name).
        One list request per kind and namespace.
    type: list
    elements: dict
    default: []
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: full
    details: Only reads; runs the same in check mode.
  diff_mode:
    support: none
    details: Changes nothing, so there is nothing to diff.
  idempotent:
    support: full
    details: Only reads.
requirements:
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Check the backends of the apps
  teg.istio.backend_check:
    apps:
      - {name: httpbin, namespace: httpbin, service: httpbin, port: 8000}
    namespaces: [envoy-gateway-system]
"""

RETURN = r"""
namespaces:
  description: Every namespace looked at, whether it exists, and its labels.
  returned: always
  type: dict
  sample: {httpbin: {exists: true, labels: {istio-injection: enabled}}}
services:
  description: The backend Services found, by C(namespace/name), with their ports.
  returned: always
  type: dict
  sample: {httpbin/httpbin: {ports: [{name: http, port: 8000, targetPort: 80}], planned: false}}
msg:
  description: Why nothing was changed (this module only reads).
  returned: always
  type: str
"""

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.teg.istio.plugins.module_utils.cluster import TegIstioError, api_errors, get_or_none
from ansible_collections.teg.istio.plugins.module_utils.names import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    describe,
)

_HTTP2_APP_PROTOCOLS = ("http2", "kubernetes.io/h2c")
_CAVEAT = "HTTP/2 to the app breaks the connection between the TEG sidecar and the app sidecar"


def _http2_reason(port):
    """Why a Service or container port counts as HTTP/2 for Istio, or None."""
    name = (port.get("name") or "").lower()
    app_protocol = (port.get("appProtocol") or "").lower()
    if app_protocol in _HTTP2_APP_PROTOCOLS:
        return "appProtocol %s" % port.get("appProtocol")
    if name.startswith("http2"):
        return "name %s" % port.get("name")
    return None


def _selects(selector, labels):
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def _port_list(ports):
    return ", ".join(str(p.get("port")) for p in ports) or "none"


def _pod_sources(namespace, pods, planned):
    """(description, labels, containers) for live Pods and planned pod templates of a namespace."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        out.append(("Pod %s/%s" % (namespace, meta.get("name")), meta.get("labels") or {},
                    (pod.get("spec") or {}).get("containers") or []))
    for obj in planned:
        template = ((obj.get("spec") or {}).get("template")) or {}
        if obj.get("metadata", {}).get("namespace") == namespace and template:
            out.append(("%s %s/%s (pod template)" % (obj.get("kind"), namespace, obj["metadata"].get("name")),
                        (template.get("metadata") or {}).get("labels") or {},
                        (template.get("spec") or {}).get("containers") or []))
    return out


def _check_app(app, services, pod_sources):
    """The problems of one app, one line each; `services` maps name -> Service dict."""
    ns, svc_name, port = app["namespace"], app["service"], app["port"]
    service = services.get(svc_name)
    where = "app %s" % app["name"]
    if service is None:
        return ["%s: Service %s/%s not found: create it, or set service/namespace to an existing Service"
                % (where, ns, svc_name)]
    spec = service.get("spec") or {}
    ports = spec.get("ports") or []
    errors = []
    if not any(p.get("port") == port for p in ports):
        errors.append("%s: Service %s/%s has no port %s (ports: %s): set port to one of them"
                      % (where, ns, svc_name, port, _port_list(ports)))
    for p in ports:
        reason = _http2_reason(p)
        if reason:
            errors.append("%s: Service %s/%s port %s declares HTTP/2 (%s); %s: rename the port (e.g. http-...) "
                          "and drop appProtocol http2/kubernetes.io/h2c" % (where, ns, svc_name, p.get("port"),
                                                                            reason, _CAVEAT))
    selector = spec.get("selector") or {}
    seen = set()
    for what, labels, containers in pod_sources:
        if not _selects(selector, labels):
            continue
        for container in containers:
            for p in container.get("ports") or []:
                reason = _http2_reason(p)
                key = (container.get("name"), p.get("containerPort"), reason)
                if not reason or key in seen:
                    continue
                seen.add(key)
                errors.append("%s: %s container %s port %s declares HTTP/2 (%s); %s: rename the container port "
                              "(e.g. http-...)" % (where, what, container.get("name"), p.get("containerPort"),
                                                   reason, _CAVEAT))
    return errors


def _owned_errors(owned, listed):
    """Objects the run would write that exist without our label. `listed` maps (kind, ns) -> {name: obj}."""
    errors = []
    for ref in owned:
        obj = listed.get((ref["kind"], ref.get("namespace")), {}).get(ref["name"])
        if obj is None:
            continue
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
            errors.append("%s exists and is not managed by teg.istio (no label %s=%s): rename the app or the "
                          "Gateway, or remove that object" % (describe(ref["kind"], ref["name"], ref.get("namespace")),
                                                              MANAGED_BY_LABEL, MANAGED_BY_VALUE))
    return errors


def _list(client, api_version, kind, namespace):
    with api_errors("list", "%s in namespace %s" % (kind, namespace) if namespace else kind):
        resource = client.resource(kind, api_version)
        return [item.to_dict() for item in client.get(resource, namespace=namespace).items]


def _namespace(client, name):
    with api_errors("read", describe("Namespace", name)):
        return get_or_none(client, "v1", "Namespace", name)


def run(module, client):
    params = module.params
    apps = params["apps"]
    planned = params["planned"] or []
    by_ns = {}
    for app in apps:
        by_ns.setdefault(app["namespace"], []).append(app)
    wanted_ns = sorted(set(by_ns) | set(params["namespaces"] or []) |
                       {o["metadata"]["namespace"] for o in planned if o.get("metadata", {}).get("namespace")})
    namespaces = {}
    for name in wanted_ns:
        obj = _namespace(client, name)
        namespaces[name] = {"exists": obj is not None,
                            "labels": ((obj or {}).get("metadata") or {}).get("labels") or {}}

    errors = []
    services_out = {}
    for ns in sorted(by_ns):
        planned_here = [o for o in planned if (o.get("metadata") or {}).get("namespace") == ns]
        if namespaces[ns]["exists"]:
            services = {s["metadata"]["name"]: s for s in _list(client, "v1", "Service", ns)}
            pods = _list(client, "v1", "Pod", ns)
        else:
            services, pods = {}, []
        planned_services = {o["metadata"]["name"]: o for o in planned_here if o.get("kind") == "Service"}
        services.update(planned_services)
        sources = _pod_sources(ns, pods, planned_here)
        for app in by_ns[ns]:
            if not namespaces[ns]["exists"] and app["service"] not in planned_services:
                errors.append("app %s: namespace %s does not exist, so Service %s/%s cannot either: create them, "
                              "or set namespace/service to an existing Service" % (app["name"], ns, ns,
                                                                                   app["service"]))
                continue
            errors.extend(_check_app(app, services, sources))
            service = services.get(app["service"])
            if service is not None:
                services_out["%s/%s" % (ns, app["service"])] = {
                    "ports": (service.get("spec") or {}).get("ports") or [],
                    "planned": app["service"] in planned_services,
                }

    listed = {}
    for ref in params["owned"] or []:
        key = (ref["kind"], ref.get("namespace"))
        if key in listed:
            continue
        if ref.get("namespace") and not namespaces.get(ref["namespace"], {"exists": True})["exists"]:
            listed[key] = {}
            continue
        listed[key] = {o["metadata"]["name"]: o for o in _list(client, ref["api_version"], ref["kind"],
                                                               ref.get("namespace"))}
    errors.extend(_owned_errors(params["owned"] or [], listed))
    return errors, {"changed": False, "namespaces": namespaces, "services": services_out,
                    "msg": "read only: checked %d app(s) in %d namespace(s)" % (len(apps), len(by_ns))}


def main():
    argument_spec = copy.deepcopy(AUTH_ARG_SPEC)
    argument_spec.update(
        apps=dict(type="list", elements="dict", required=True, options=dict(
            name=dict(type="str", required=True),
            namespace=dict(type="str", required=True),
            service=dict(type="str", required=True),
            port=dict(type="int", required=True),
        )),
        planned=dict(type="list", elements="dict", default=[]),
        namespaces=dict(type="list", elements="str", default=[]),
        owned=dict(type="list", elements="dict", default=[]),
    )
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argument_spec, supports_check_mode=True)
    try:
        client = get_api_client(module)
        errors, result = run(module, client)
    except CoreException as exc:
        module.fail_from_exception(exc)
    except TegIstioError as exc:
        module.fail_json(msg=str(exc))
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors, **{k: v for k, v in result.items() if k != "msg"})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
