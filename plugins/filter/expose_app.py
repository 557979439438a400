# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure rendering for the expose_app role: app declarations in, Kubernetes objects out.

Nothing here talks to the API server; the role feeds in what its one cluster_facts read found, so
every decision (names, API versions, routes, backend checks, what to prune) is unit-tested in
tests/unit."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import difflib
import json
import re

from ansible_collections.teg.istio.plugins.module_utils.names import MANAGED_BY_LABEL, MANAGED_BY_VALUE, describe

APP_LABEL = "teg.istio/app"
GATEWAY_LABEL = "teg.istio/gateway"
GATEWAY_NAMESPACE_LABEL = "teg.istio/gateway-namespace"
APPS_ANNOTATION = "teg.istio/apps"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Gateway API's Hostname pattern (HTTPRoute spec.hostnames): a lowercase RFC 1123 subdomain, the
# leftmost label alone may be the wildcard "*"; IP addresses are not allowed.
_GATEWAY_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
# Gateway API v1 CEL rules on PathPrefix values, checked here so the error names the app.
_PATH_FORBIDDEN = ("//", "/./", "/../", "%2f", "%2F", "#")

APP_KEYS = ("name", "namespace", "service", "port", "hostnames", "path_prefix", "rewrite", "section_name")


def _fqdn(app):
    return "%s.%s.svc.cluster.local" % (app["service"], app["namespace"])


def _hostname_error(host):
    if not isinstance(host, str) or not host:
        return "is empty"
    if len(host) > 253:
        return "is longer than 253 characters"
    if host != host.lower():
        return "has upper-case letters (Gateway API hostnames are lower case)"
    if _IPV4.match(host) or ":" in host:
        return "is an IP address (Gateway API hostnames must be DNS names)"
    if "*" in host and not host.startswith("*."):
        return "has a wildcard that is not the whole leftmost label (only '*.example.com' is allowed)"
    if host == "*" or host.count("*") > 1:
        return "is a bare or repeated wildcard (only '*.example.com' is allowed)"
    if not _GATEWAY_HOSTNAME.match(host):
        return "is not an RFC 1123 DNS name (lower-case letters, digits, '-' and '.')"
    if any(len(label) > 63 for label in host.split(".")):
        return "has a label longer than 63 characters"
    return None


def _path_error(path):
    if not isinstance(path, str) or not path.startswith("/"):
        return "must start with '/'"
    if len(path) > 1024:
        return "is longer than 1024 characters"
    for bad in _PATH_FORBIDDEN:
        if bad in path:
            return "must not contain %r" % bad
    if path.endswith("/..") or path.endswith("/.") or any(c.isspace() or c == "?" for c in path):
        return "must be a plain path (no '?', whitespace, or trailing '/.' or '/..')"
    return None


def _strip_slash(path):
    """'/httpbin/' and '/httpbin' are the same prefix for PathPrefix; keep one spelling."""
    return path.rstrip("/") or "/"


def _normalize(app, index, errors):
    """The app with defaults applied, or None (and an error) when it cannot be rendered."""
    where = "expose_app_apps[%d]" % index
    if not isinstance(app, dict):
        errors.append("%s is not a dict: give name, namespace, port and hostnames" % where)
        return None
    unknown = sorted(set(app) - set(APP_KEYS))
    name = app.get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > 63:
        errors.append("%s: name %r is not a DNS-1123 label (lower-case letters, digits and '-', at most 63): "
                      "rename the app" % (where, name))
        return None
    where = "app %s" % name
    if unknown:
        errors.append("%s: unknown key(s) %s: use only %s" % (where, ", ".join(unknown), ", ".join(APP_KEYS)))
    out = {
        "name": name,
        "namespace": app.get("namespace"),
        "service": app.get("service") or name,
        "port": app.get("port"),
        "hostnames": app.get("hostnames"),
        "path_prefix": app.get("path_prefix") or "/",
        "rewrite": app.get("rewrite") if app.get("rewrite") is not None else "/",
        "section_name": app.get("section_name"),
    }
    ok = True
    if not isinstance(out["namespace"], str) or not _DNS_LABEL.match(out["namespace"]):
        errors.append("%s: namespace %r is not a DNS-1123 label: set namespace to the namespace of its Service"
                      % (where, out["namespace"]))
        ok = False
    if not isinstance(out["service"], str) or not _DNS_LABEL.match(out["service"]):
        errors.append("%s: service %r is not a valid Service name: set service to the backend Service's name"
                      % (where, out["service"]))
        ok = False
    port = out["port"]
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        errors.append("%s: port %r is not a port number (1-65535): set port to the Service port to route to"
                      % (where, out["port"]))
        ok = False
    out["port"] = port
    hosts = out["hostnames"]
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(hosts, list) or not hosts:
        errors.append("%s: hostnames is empty: give at least one hostname (e.g. www.example.com)" % where)
        ok = False
        hosts = []
    if len(hosts) > 16:
        errors.append("%s: %d hostnames, an HTTPRoute takes at most 16: split the app" % (where, len(hosts)))
        ok = False
    for host in hosts:
        problem = _hostname_error(host)
        if problem:
            errors.append("%s: hostname %r %s: fix it in hostnames" % (where, host, problem))
            ok = False
    if len(set(hosts)) != len(hosts):
        errors.append("%s: hostnames lists a name twice: remove the duplicate" % where)
        ok = False
    out["hostnames"] = list(hosts)
    for key in ("path_prefix", "rewrite"):
        problem = _path_error(out[key])
        if problem:
            errors.append("%s: %s %r %s: fix %s" % (where, key, out[key], problem, key))
            ok = False
    if ok:
        out["path_prefix"] = _strip_slash(out["path_prefix"])
    return out if ok else None


def _labels(settings, app=None):
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        GATEWAY_LABEL: settings["gateway"]["name"],
        GATEWAY_NAMESPACE_LABEL: settings["gateway"]["namespace"],
    }
    if app is not None:
        labels[APP_LABEL] = app["name"]
    return labels


def _listeners(settings, namespaces):
    """The Gateway's listeners; a listener without allowedRoutes admits only the apps' namespaces.

    HTTPRoutes live next to their Service (no ReferenceGrant needed), so the Gateway must accept
    routes from those namespaces; a selector on the namespace name admits exactly them rather than
    every namespace of the cluster."""
    out = []
    for listener in settings["gateway"]["listeners"]:
        listener = _plain_copy(listener)
        if "allowedRoutes" not in listener:
            if namespaces:
                listener["allowedRoutes"] = {"namespaces": {"from": "Selector", "selector": {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(namespaces)}]}}}
            else:
                listener["allowedRoutes"] = {"namespaces": {"from": "Same"}}
        out.append(listener)
    return out


def _httproute(app, settings, api_version, routing):
    gateway = settings["gateway"]
    parent = {"name": gateway["name"], "namespace": gateway["namespace"]}
    if app["section_name"]:
        parent["sectionName"] = app["section_name"]
    rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": app["path_prefix"]}}],
        "backendRefs": [{"name": app["service"], "port": app["port"]}],
    }
    if routing == "service":
        # Istio's pattern for third-party load balancers: EG sends to the Service's ClusterIP and the
        # Host names the Service, so the sidecar routes by its registry entry (platform notes D5).
        rewrite = {"hostname": _fqdn(app)}
        if app["rewrite"] != app["path_prefix"]:
            rewrite["path"] = {"type": "ReplacePrefixMatch", "replacePrefixMatch": app["rewrite"]}
        rule["filters"] = [{"type": "URLRewrite", "urlRewrite": rewrite}]
    # The prefix is not stripped at the edge in virtualservice mode: the mesh layer matches on it.
    return {
        "apiVersion": api_version,
        "kind": "HTTPRoute",
        "metadata": {"name": app["name"], "namespace": app["namespace"], "labels": _labels(settings, app)},
        "spec": {"parentRefs": [parent], "hostnames": list(app["hostnames"]), "rules": [rule]},
    }


def _vs_routes(app):
    """VirtualService http routes for one app, in evaluation order.

    Envoy's prefix rewrite swaps the matched text, so prefix '/httpbin' rewritten to '/' turns
    '/httpbin/get' into '//get' (istio/istio#26828); stripping a path prefix takes two routes, one
    for '<prefix>/' and one for the exact '<prefix>' (envoyproxy/envoy#3160)."""
    destination = {"destination": {"host": _fqdn(app), "port": {"number": app["port"]}}}
    prefix, rewrite = app["path_prefix"], app["rewrite"]
    name = app["name"]
    if prefix == rewrite:
        return [{"name": name, "match": [{"uri": {"prefix": prefix}}], "route": [destination]}]
    if prefix == "/":
        return [{"name": name, "match": [{"uri": {"prefix": "/"}}],
                 "rewrite": {"uri": rewrite.rstrip("/") + "/"}, "route": [destination]}]
    return [
        {"name": name, "match": [{"uri": {"prefix": prefix + "/"}}],
         "rewrite": {"uri": rewrite.rstrip("/") + "/"}, "route": [copy.deepcopy(destination)]},
        {"name": name + "-exact", "match": [{"uri": {"exact": prefix}}],
         "rewrite": {"uri": rewrite}, "route": [destination]},
    ]


def _vs_name(settings, host):
    return "%s-%s" % (settings["gateway"]["name"], host.replace("*", "wildcard"))


def _virtualservices(apps, settings, api_version):
    """One VirtualService per hostname, holding the routes of every app serving that host.

    Istio merges VirtualServices of one host only for ingress gateways; on the `mesh` gateway two
    of them conflict (IST0109), so apps sharing a host share its VirtualService. Longer prefixes
    come first so that '/api/v2' is matched before '/api'."""
    by_host = {}
    for app in apps:
        for host in app["hostnames"]:
            by_host.setdefault(host, []).append(app)
    vs_settings = settings["virtualservice"]
    out = []
    for host in sorted(by_host):
        members = sorted(by_host[host], key=lambda a: (-len(a["path_prefix"]), a["path_prefix"], a["name"]))
        http = []
        for app in members:
            http.extend(_vs_routes(app))
        spec = {"hosts": [host], "gateways": ["mesh"], "http": http}
        # Always rendered, null when unset: a merge patch then also removes an exportTo dropped later.
        spec["exportTo"] = list(vs_settings["export_to"]) if vs_settings.get("export_to") else None
        out.append({
            "apiVersion": api_version,
            "kind": "VirtualService",
            "metadata": {
                "name": _vs_name(settings, host),
                "namespace": vs_settings["namespace"],
                "labels": _labels(settings),
                "annotations": {APPS_ANNOTATION: ",".join(sorted(a["name"] for a in members))},
            },
            "spec": spec,
        })
    return out


def _plain_copy(value):
    """A deep copy of YAML-born data as plain dicts, lists and scalars.

    Ansible 2.19 hands filters its tagged types (each value carries its origin), and copy.deepcopy
    copies those tags too: for the httpbin manifest that took 0.25 s of every expose_app run, a JSON
    round trip a fraction of a millisecond (profile_tasks, docs/architecture.md)."""
    return json.loads(json.dumps(value))


def _sample_objects(settings):
    sample = settings.get("sample") or {}
    if not sample.get("enabled"):
        return []
    out = []
    for doc in sample.get("manifest") or []:
        if not doc:
            continue
        obj = _plain_copy(doc)
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = sample["namespace"]
        meta.setdefault("labels", {})[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
        if obj.get("kind") == "Deployment" and sample.get("image"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                container["image"] = sample["image"]
        out.append(obj)
    return out


def _listener_errors(apps, settings):
    errors = []
    listeners = settings["gateway"]["listeners"]
    names = [lst.get("name") for lst in listeners]
    if not listeners:
        errors.append("expose_app_gateway_listeners is empty: give at least one listener "
                      "(e.g. {name: http, port: 80, protocol: HTTP})")
    if len(set(names)) != len(names):
        errors.append("expose_app_gateway_listeners has two listeners named alike: give each a unique name")
    for listener in listeners:
        if not listener.get("name") or not listener.get("port") or not listener.get("protocol"):
            errors.append("expose_app_gateway_listeners entry %r needs name, port and protocol" % (listener,))
    for app in apps:
        if app["section_name"] and app["section_name"] not in names:
            errors.append("app %s: section_name %r is not a listener of Gateway %s/%s (listeners: %s): "
                          "use one of them or add the listener to expose_app_gateway_listeners"
                          % (app["name"], app["section_name"], settings["gateway"]["namespace"],
                             settings["gateway"]["name"], ", ".join(str(n) for n in names)))
    return errors


def _claim_errors(apps):
    """Two apps claiming the same host and prefix would make the edge pick one at random."""
    errors = []
    claims = {}
    names = {}
    for app in apps:
        if app["name"] in names:
            errors.append("apps %s in %s and %s in %s have the same name: app names must be unique"
                          % (app["name"], names[app["name"]], app["name"], app["namespace"]))
        names[app["name"]] = app["namespace"]
        for host in app["hostnames"]:
            key = (host, app["path_prefix"])
            if key in claims and claims[key] != app["name"]:
                errors.append("apps %s and %s both claim host %s with path_prefix %s: give one of them another "
                              "hostname or path_prefix" % (claims[key], app["name"], host, app["path_prefix"]))
            claims.setdefault(key, app["name"])
    return errors


def _routing_errors(settings):
    cluster = settings.get("cluster") or {}
    routing = settings["routing"]
    errors = []
    if routing not in ("virtualservice", "service"):
        return ["expose_app_routing is %r: use virtualservice or service" % (routing,)]
    if not (cluster.get("gateway_api") or {}).get("api_version"):
        errors.append("the cluster serves no Gateway API (gateway.networking.k8s.io): install TEG / Envoy Gateway "
                      "before running expose_app")
    if routing == "virtualservice" and not (cluster.get("istio") or {}).get("virtualservice_api_version"):
        errors.append("the cluster serves no Istio VirtualService API (networking.istio.io): run the istio_install "
                      "role first, or set expose_app_routing: service")
    gatewayclass = cluster.get("gatewayclass")
    name = settings["gateway"]["class"]
    if not gatewayclass and (cluster.get("gateway_api") or {}).get("api_version"):
        errors.append("GatewayClass %s does not exist, so the Gateway would never be programmed: install TEG or "
                      "set expose_app_gateway_class to an existing GatewayClass" % name)
    if routing == "service":
        envoyproxy = cluster.get("envoyproxy")
        if not envoyproxy or not envoyproxy.get("routing_type"):
            errors.append("expose_app_routing: service needs EnvoyProxy spec.routingType (Envoy Gateway >= v1.1), "
                          "which the EnvoyProxy API of this cluster (%s) does not have: upgrade TEG or use "
                          "expose_app_routing: virtualservice"
                          % ((envoyproxy or {}).get("api_version") or "not served"))
        elif gatewayclass and not _envoyproxy_ref(gatewayclass):
            errors.append("GatewayClass %s has no parametersRef to an EnvoyProxy, so there is no EnvoyProxy to set "
                          "routingType on: run the teg_istio_prep role first" % name)
    return errors


def _envoyproxy_ref(gatewayclass):
    ref = (gatewayclass or {}).get("parameters_ref")
    if ref and ref.get("kind") == "EnvoyProxy" and ref.get("name"):
        return ref
    return None


def _input_check(apps, settings):
    """(normalized apps, errors) from the declarations alone, without anything read from the cluster."""
    errors = []
    if apps is None:
        apps = []
    if not isinstance(apps, list):
        return [], ["expose_app_apps must be a list of apps"]
    normalized = [a for a in (_normalize(app, i, errors) for i, app in enumerate(apps)) if a]
    errors.extend(_claim_errors(normalized))
    errors.extend(_listener_errors(normalized, settings))
    sample = settings.get("sample") or {}
    if sample.get("enabled") and not _DNS_LABEL.match(str(sample.get("namespace"))):
        errors.append("expose_app_sample_namespace %r is not a DNS-1123 label" % (sample.get("namespace"),))
    return normalized, errors


def expose_app_input_errors(apps, settings):
    """What is wrong with the declarations themselves (hostnames, prefixes, duplicate claims, listeners),
    decidable before anything is read from the cluster; site.yml checks it before any role writes."""
    return _input_check(apps, settings)[1]


def expose_app_plan(apps, settings):
    """Everything the role writes, derived from the declarations; `errors` stops the role."""
    normalized, errors = _input_check(apps, settings)
    if errors:
        return {"errors": errors}
    errors = _routing_errors(settings)
    if errors:
        return {"errors": errors}
    sample = settings.get("sample") or {}

    cluster = settings["cluster"]
    routing = settings["routing"]
    gateway_settings = settings["gateway"]
    app_namespaces = sorted({a["namespace"] for a in normalized})
    gateway = {
        "apiVersion": cluster["gateway_api"]["api_version"],
        "kind": "Gateway",
        "metadata": {"name": gateway_settings["name"], "namespace": gateway_settings["namespace"],
                     "labels": _labels(settings)},
        "spec": {"gatewayClassName": gateway_settings["class"],
                 "listeners": _listeners(settings, app_namespaces)},
    }
    routes = [_httproute(a, settings, cluster["gateway_api"]["api_version"], routing) for a in normalized]
    virtualservices = []
    if routing == "virtualservice":
        virtualservices = _virtualservices(normalized, settings, cluster["istio"]["virtualservice_api_version"])
    sample_objects = _sample_objects(settings)
    objects = sample_objects + [gateway] + routes + virtualservices
    namespaces = sorted(set(app_namespaces) | ({sample["namespace"]} if sample.get("enabled") else set()))
    return {
        "errors": [],
        "apps": normalized,
        "backends": [{k: a[k] for k in ("name", "namespace", "service", "port")} for a in normalized],
        "namespaces": namespaces,
        "sample_objects": sample_objects,
        "objects": objects,
        "owned": [_ref(o) for o in [gateway] + routes + virtualservices],
        "prune_selectors": {read["kind"].lower(): read["label_selectors"] for read in expose_app_owned_reads(settings)},
        "envoyproxy_ref": _envoyproxy_ref(cluster.get("gatewayclass")),
    }


def expose_app_reads(apps, settings, prune=True):
    """Everything the role reads, as items of teg.istio.cluster_facts `objects`, so that one process
    reads it all: with `prune`, the routes and VirtualServices made earlier for this Gateway
    (expose_app_owned_reads); every namespace the role uses; the Services and Pods of each app
    namespace (the backend checks); and each namespace's objects of the kinds the role writes, to
    find one of the same name that someone else made. Needs only the declarations; apps that cannot
    be rendered are left out (expose_app_plan reports them)."""
    normalized, _errors = _input_check(apps, settings)
    sample = settings.get("sample") or {}
    gateway_ns = settings["gateway"]["namespace"]
    vs_ns = settings["virtualservice"]["namespace"]
    app_namespaces = sorted({a["namespace"] for a in normalized})
    # A sample namespace that is not a valid name is expose_app_plan's error, not a request to make.
    sample_ns = {sample["namespace"]} if sample.get("enabled") and _DNS_LABEL.match(str(sample.get("namespace"))) else set()
    namespaces = sorted(set(app_namespaces) | {gateway_ns, vs_ns} | sample_ns)
    reads = list(expose_app_owned_reads(settings)) if prune else []
    reads.extend({"kind": "Namespace", "api_version": "v1", "name": ns} for ns in namespaces)
    for ns in app_namespaces:
        reads.extend({"kind": kind, "api_version": "v1", "namespace": ns} for kind in ("Service", "Pod"))
    owned_lists = [("Gateway", gateway_ns)] + [("HTTPRoute", ns) for ns in app_namespaces]
    if settings["routing"] == "virtualservice":
        owned_lists.append(("VirtualService", vs_ns))
    reads.extend({"kind": kind, "namespace": ns} for kind, ns in owned_lists)
    return reads


def expose_app_backends(plan, reads, results):
    """What the read of expose_app_reads found, checked against the plan before anything is written:
    each app's backend Service exists and has the app's port; no port of it and no container port of
    the Pods it selects declares HTTP/2 (the TEG and Istio caveat); no object the role writes exists
    without the collection's label. Planned objects (the httpbin sample) stand in for live ones.

    Returns `errors` (one line each, naming the object and the fix), `namespaces` ({name: {exists,
    labels}}), `services` (the backend Services found, by namespace/name, with their ports) and
    `managed` (what the prune reads found)."""
    if len(reads) != len(results):
        raise ValueError("the read returned %d results for %d items" % (len(results), len(reads)))
    namespaces, listed, managed = {}, {}, []
    for spec, result in zip(reads, results):
        resources = (result or {}).get("resources") or []
        if spec["kind"] == "Namespace":
            labels = ((resources[0].get("metadata") or {}).get("labels") or {}) if resources else {}
            namespaces[spec["name"]] = {"exists": bool(resources), "labels": labels}
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
            services_out["%s/%s" % (ns, app["service"])] = {
                "ports": (service.get("spec") or {}).get("ports") or [],
                "planned": app["service"] in planned_services,
            }
    errors.extend(_owned_errors(plan.get("owned") or [], listed))
    return {"errors": errors, "namespaces": namespaces, "services": services_out, "managed": managed}


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


def _ref(obj):
    meta = obj["metadata"]
    return {"api_version": obj["apiVersion"], "kind": obj["kind"], "namespace": meta.get("namespace"),
            "name": meta["name"]}


def expose_app_namespaces(plan, found, labels, sample_namespace=None):
    """Namespace objects: injection labels on the app namespaces; the sample's namespace is created
    (and marked as ours) only when it does not exist, never claimed when someone else made it.

    `found` is expose_app_backends' `namespaces` result: {name: {exists, labels}}."""
    out = []
    for name in plan.get("namespaces", []):
        info = found.get(name) or {}
        wanted = dict(labels)
        if name == sample_namespace and not info.get("exists"):
            wanted[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
        current = info.get("labels") or {}
        if info.get("exists") and all(current.get(k) == v for k, v in wanted.items()):
            continue
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": wanted}})
    return out


def expose_app_unlabel(namespaces, names, labels):
    """Teardown: merge patches that take the injection `labels` (their keys) off the namespaces `names`
    among `namespaces` (as read), skipping those without them and those the collection created, which
    are deleted whole."""
    out = []
    for ns in namespaces or []:
        meta = ns.get("metadata") or {}
        current = meta.get("labels") or {}
        if meta.get("name") not in (names or []) or current.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
            continue
        present = {key: None for key in labels or {} if key in current}
        if present:
            out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": meta["name"], "labels": present}})
    return out


def expose_app_owned_reads(settings):
    """What to list to find the HTTPRoutes and VirtualServices made for this Gateway, as items of
    teg.istio.cluster_facts `objects`. Needs only the declarations, so the role lists them in the same
    read as everything else."""
    selector = ["%s=%s" % (k, v) for k, v in sorted(_labels(settings).items())]
    return [{"kind": "HTTPRoute", "label_selectors": selector + [APP_LABEL]},
            {"kind": "VirtualService", "label_selectors": selector}]


def expose_app_envoyproxy(existing, routing, api_version):
    """The EnvoyProxy change the routing mode needs, or None.

    service: routingType Service. virtualservice: a routingType Service left by an earlier run in
    service mode is removed, since the mesh VirtualService cannot match ClusterIP traffic
    (platform notes G4). Other fields are never touched: the patch carries only routingType."""
    if not existing:
        return None
    current = (existing.get("spec") or {}).get("routingType")
    meta = existing["metadata"]
    if routing == "service":
        wanted = "Service"
    elif current == "Service":
        wanted = None
    else:
        return None
    if current == wanted:
        return None
    return {"apiVersion": api_version, "kind": "EnvoyProxy",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"routingType": wanted}}


def expose_app_stale(found, plan):
    """Objects the collection made for this Gateway that the plan no longer declares."""
    wanted = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in plan.get("objects", [])}
    out = []
    for obj in found or []:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
            continue
        if (obj.get("kind"), meta.get("namespace"), meta.get("name")) in wanted:
            continue
        out.append({"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                    "metadata": {"name": meta["name"], "namespace": meta.get("namespace")}})
    return sorted(out, key=lambda o: (o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"]))


def expose_app_changed(definitions, dry_run):
    """The definitions a server-side dry run found different from the cluster.

    kubernetes.core.k8s returns one result per definition (a bare result when there was only one);
    applying only these keeps a run with nothing to do free of write requests."""
    if not definitions or not dry_run or dry_run.get("skipped"):
        return []
    results = (dry_run.get("result") or {}).get("results")
    if results is None:
        # One definition: the task's changed_when has overwritten `changed` on this bare result, so
        # the module's own evidence decides (a create, or a diff with something in it).
        evidence = "diff" in dry_run or dry_run.get("method") == "create"
        changed = dry_run.get("method") == "create" or bool(dry_run.get("diff")) if evidence else dry_run.get("changed")
        results = [dict(dry_run, changed=changed)]
    if len(results) != len(definitions):
        raise ValueError("dry run returned %d results for %d definitions" % (len(results), len(definitions)))
    return [d for d, r in zip(definitions, results) if _differs(r)]


def _differs(result):
    """Whether one dry-run result is a change of ours.

    kubernetes.core compares the object it read with the dry run's answer, so a status update by a
    controller in between (a Deployment rolling out) looks like a change; with the diff at hand,
    only spec and metadata other than the API server's bookkeeping count."""
    if not result.get("changed"):
        return False
    if result.get("method") != "update" or "diff" not in result:
        return True
    diff = result["diff"] or {}
    before = _without_bookkeeping(diff.get("before"))
    after = _without_bookkeeping(diff.get("after"))
    before.pop("status", None)
    after.pop("status", None)
    return before != after


def _without_bookkeeping(obj):
    """The part of a diff a reader cares about: the API server's counters and field owners removed."""
    obj = copy.deepcopy(obj or {})
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in ("managedFields", "generation", "resourceVersion"):
            meta.pop(key, None)
        if not meta:
            del obj["metadata"]
    return obj


def expose_app_diff(dry_run, definitions):
    """A unified diff per object the dry run found different, for --diff.

    kubernetes.core.k8s nests per-object diffs under result.results when given a list, where
    Ansible's diff display does not look, so the role prints them itself."""
    if not definitions or not dry_run or dry_run.get("skipped"):
        return []
    results = (dry_run.get("result") or {}).get("results")
    if results is None:
        # One definition: the task's changed_when has overwritten `changed` on this bare result, so
        # the module's own evidence decides (a create, or a diff with something in it).
        evidence = "diff" in dry_run or dry_run.get("method") == "create"
        changed = dry_run.get("method") == "create" or bool(dry_run.get("diff")) if evidence else dry_run.get("changed")
        results = [dict(dry_run, changed=changed)]
    out = []
    for definition, result in zip(definitions, results):
        if not _differs(result):
            continue
        [what] = expose_app_describe([definition])
        if result.get("method") == "create":
            out.append("%s: created" % what)
            continue
        diff = result.get("diff") or {}
        before = json.dumps(_without_bookkeeping(diff.get("before")), indent=2, sort_keys=True).splitlines()
        after = json.dumps(_without_bookkeeping(diff.get("after")), indent=2, sort_keys=True).splitlines()
        out.append("\n".join(difflib.unified_diff(before, after, "%s (cluster)" % what, "%s (declared)" % what,
                                                  lineterm="")))
    return out


def expose_app_split(definitions, new_namespaces, pending_kinds=None):
    """Split definitions into those a dry run can check and those it cannot yet.

    In check mode the namespaces this run would create do not exist, and the kinds of an Istio install
    that was only predicted are not served (istio_pending_cluster), so the API server cannot dry-run
    those objects; they are reported as to be created instead."""
    new = set(new_namespaces or [])
    kinds = set(pending_kinds or [])

    def _pending(d):
        return d["metadata"].get("namespace") in new or d["kind"] in kinds

    return {"ready": [d for d in definitions if not _pending(d)], "pending": [d for d in definitions if _pending(d)]}


def expose_app_describe(definitions):
    """'Kind ns/name' for each definition, for messages."""
    out = []
    for d in definitions or []:
        meta = d["metadata"]
        out.append("%s %s" % (d["kind"], "%s/%s" % (meta["namespace"], meta["name"]) if meta.get("namespace")
                              else meta["name"]))
    return out


class FilterModule(object):
    def filters(self):
        return {
            "expose_app_plan": expose_app_plan,
            "expose_app_input_errors": expose_app_input_errors,
            "expose_app_namespaces": expose_app_namespaces,
            "expose_app_envoyproxy": expose_app_envoyproxy,
            "expose_app_owned_reads": expose_app_owned_reads,
            "expose_app_reads": expose_app_reads,
            "expose_app_backends": expose_app_backends,
            "expose_app_unlabel": expose_app_unlabel,
            "expose_app_stale": expose_app_stale,
            "expose_app_changed": expose_app_changed,
            "expose_app_split": expose_app_split,
            "expose_app_describe": expose_app_describe,
            "expose_app_diff": expose_app_diff,
        }
