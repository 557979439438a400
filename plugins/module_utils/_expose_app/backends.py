# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: what the expose_app role reads (from the declarations
alone) and the checks on what it found: each backend Service exists with the app's port, the HTTP/2
caveat on Service and container ports, and no object the role writes held by someone else.

Pure: no I/O, unit-tested in tests/unit/plugins/module_utils/test_expose_app*.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils._expose_app.inputs import DNS_LABEL, input_check
from ansible_collections.teg.istio.plugins.module_utils._expose_app.render import owned_reads
from ansible_collections.teg.istio.plugins.module_utils.names import MANAGED_BY_LABEL, MANAGED_BY_VALUE, describe


def reads(apps, settings, prune=True):
    """Everything the role reads, keyed by name (reads of ClusterView.read, cluster_facts `objects`), so
    that one process reads it all: with `prune`, the routes and VirtualServices made earlier for this Gateway
    (owned_reads); every namespace the role uses; the Services and Pods of each app
    namespace (the backend checks); and each namespace's objects of the kinds the role writes, to
    find one of the same name that someone else made. Needs only the declarations; apps that cannot
    be rendered are left out (render reports them)."""
    normalized, _errors = input_check(apps, settings)
    sample = settings.get("sample") or {}
    gateway_ns = settings["gateway"]["namespace"]
    vs_ns = settings["virtualservice"]["namespace"]
    app_namespaces = sorted({a["namespace"] for a in normalized})
    # A sample namespace that is not a valid name is render's error, not a request to make.
    sample_ns = {sample["namespace"]} if sample.get("enabled") and DNS_LABEL.match(str(sample.get("namespace"))) else set()
    namespaces = sorted(set(app_namespaces) | {gateway_ns, vs_ns} | sample_ns)
    out = dict(("made earlier: %s" % spec["kind"], spec) for spec in owned_reads(settings)) if prune else {}
    out.update(("Namespace %s" % ns, {"kind": "Namespace", "api_version": "v1", "name": ns}) for ns in namespaces)
    for ns in app_namespaces:
        out.update(("%ss in %s" % (kind, ns), {"kind": kind, "api_version": "v1", "namespace": ns})
                   for kind in ("Service", "Pod"))
    owned_lists = [("Gateway", gateway_ns)] + [("HTTPRoute", ns) for ns in app_namespaces]
    if settings["routing"] == "virtualservice":
        owned_lists.append(("VirtualService", vs_ns))
    out.update(("%ss in %s" % (kind, ns), {"kind": kind, "namespace": ns}) for kind, ns in owned_lists)
    return out


def check_backends(plan, reads, results, routing="virtualservice"):
    """What the read of reads found, checked against the plan before anything is written:
    each app's backend Service exists and has the app's port; no port of it and no container port of
    the Pods it selects declares HTTP/2 (the TEG and Istio caveat); it is not ExternalName, nor, with
    `routing` service, headless; no object the role writes exists
    without the collection's label. Planned objects (the httpbin sample) stand in for live ones.

    Returns `errors` (one line each, naming the object and the fix), `namespaces` ({name: {exists,
    labels, object}}), `services` (the backend Services found, by namespace/name, with their ports), `managed`
    (what the prune reads found) and `listed` ({(kind, namespace): {name: object}} of every list read)."""
    namespaces, listed, managed = {}, {}, []
    for key, spec in reads.items():
        resources = (results.get(key) or {}).get("resources") or []
        if spec["kind"] == "Namespace":
            labels = ((resources[0].get("metadata") or {}).get("labels") or {}) if resources else {}
            namespaces[spec["name"]] = {"exists": bool(resources), "labels": labels,
                                        "object": resources[0] if resources else None}
        elif spec.get("label_selectors"):
            managed.extend(resources)
        else:
            listed[(spec["kind"], spec.get("namespace"))] = {o["metadata"]["name"]: o for o in resources}
    planned = plan.get("sample_objects") or []
    errors, services_out = [], {}
    for app in plan.get("backends") or []:
        ns = app["namespace"]
        planned_here = [o for o in planned if (o.get("metadata") or {}).get("namespace") == ns]
        planned_services = {o["metadata"]["name"]: o for o in planned_here if o.get("kind") == "Service"}
        if not namespaces.get(ns, {}).get("exists") and app["service"] not in planned_services:
            errors.append("app %s: namespace %s does not exist, so Service %s/%s cannot either: create them, "
                          "or set namespace/service to an existing Service" % (app["name"], ns, ns, app["service"]))
            continue
        services = dict(listed.get(("Service", ns)) or {}, **planned_services)
        pods = list((listed.get(("Pod", ns)) or {}).values())
        errors.extend(_check_app(app, services, _pod_sources(ns, pods, planned_here)))
        service = services.get(app["service"])
        if service is not None:
            errors.extend(_no_cluster_ip_errors(app, service, routing))
        if service is not None:
            services_out["%s/%s" % (ns, app["service"])] = {
                "ports": (service.get("spec") or {}).get("ports") or [],
                "planned": app["service"] in planned_services,
            }
    errors.extend(_owned_errors(plan.get("owned") or [], listed))
    return {"errors": errors, "namespaces": namespaces, "services": services_out, "managed": managed,
            "listed": listed}


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


def _no_cluster_ip_errors(app, service, routing):
    """A backend Service without a cluster IP. Envoy Gateway (v1.9.0 `internal/gatewayapi/validate.go`,
    `validateBackendRefService`) refuses an ExternalName Service as a backend in every routing mode: the route's
    backend is not programmed. A headless Service (clusterIP None) has no cluster IP for routingType Service to
    send to: Envoy Gateway before v1.7 refuses it (envoyproxy/gateway#7849), from v1.7 it sends to the pods
    instead (envoyproxy/gateway#8021, `route.go` `useEndpointRouting`), which is not the Service routing that
    expose_app_routing: service sets up for the sidecar."""
    spec = service.get("spec") or {}
    where = "app %s: Service %s/%s" % (app["name"], app["namespace"], app["service"])
    if spec.get("type") == "ExternalName":
        return ["%s is of type ExternalName (%s), which Envoy Gateway does not route to: point the app at a Service "
                "with a selector (or an Envoy Gateway Backend, outside this role)" % (where, spec.get("externalName"))]
    if routing == "service" and spec.get("clusterIP") == "None":
        return ["%s is headless (clusterIP: None) and has no cluster IP for expose_app_routing: service: point the "
                "app at a ClusterIP Service that selects the same pods, or use expose_app_routing: virtualservice"
                % where]
    return []


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
