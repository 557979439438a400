# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the objects of the expose_app role rendered from the
app declarations and what the cluster serves: the Gateway, one HTTPRoute per app, one VirtualService
per hostname on the `mesh` gateway (or the service-routing HTTPRoute filters), the httpbin sample.

Pure: no I/O, unit-tested in tests/unit/plugins/module_utils/test_expose_app*.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json

from ansible_collections.teg.istio.plugins.module_utils._expose_app.inputs import input_check
from ansible_collections.teg.istio.plugins.module_utils.names import (
    APP_LABEL,
    GATEWAY_LABEL,
    GATEWAY_NAMESPACE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    referenced_envoyproxy,
)

APPS_ANNOTATION = "teg.istio/apps"


def _fqdn(app):
    return "%s.%s.svc.cluster.local" % (app["service"], app["namespace"])


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
        # Host names the Service, so the sidecar routes by its registry entry (docs/traffic-simulation.md, hop 2).
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

    Ansible 2.19 hands over its tagged types (each value carries its origin), and copy.deepcopy
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
            ambient = settings.get("mesh_mode") == "ambient"
            errors.append("%s needs EnvoyProxy spec.routingType (Envoy Gateway >= v1.1), which the EnvoyProxy API of "
                          "this cluster (%s) does not have: upgrade TEG or use %s"
                          % ("ambient mode (it routes through the Service)" if ambient else "expose_app_routing: service",
                             (envoyproxy or {}).get("api_version") or "not served",
                             "sidecar mode (expose_app_mesh_mode: sidecar)" if ambient
                             else "expose_app_routing: virtualservice"))
        elif gatewayclass and not referenced_envoyproxy(gatewayclass.get("parameters_ref")):
            errors.append("GatewayClass %s has no parametersRef to an EnvoyProxy, so there is no EnvoyProxy to set "
                          "routingType on: run the teg_istio_prep role first" % name)
    return errors


def render(apps, settings):
    """Everything the role writes, derived from the declarations; `errors` stops the role."""
    normalized, errors = input_check(apps, settings)
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
    # The collection's Gateway, only when an app needs it and the routes are not to attach to one the platform team
    # owns (expose_app_gateway_create false: plan.existing_gateway_errors checks that one before any write).
    gateway = None if not (normalized and gateway_settings.get("create", True)) else {
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
    gateways = [gateway] if gateway else []
    objects = sample_objects + gateways + routes + virtualservices
    namespaces = sorted(set(app_namespaces) | ({sample["namespace"]} if sample.get("enabled") else set()))
    return {
        "errors": [],
        "apps": normalized,
        "backends": [{k: a[k] for k in ("name", "namespace", "service", "port")} for a in normalized],
        "namespaces": namespaces,
        "sample_objects": sample_objects,
        "objects": objects,
        "owned": [_ref(o) for o in gateways + routes + virtualservices],
        "prune_selectors": {read["kind"].lower(): read["label_selectors"] for read in owned_reads(settings)},
        "envoyproxy_ref": referenced_envoyproxy((cluster.get("gatewayclass") or {}).get("parameters_ref")),
    }


def _ref(obj):
    meta = obj["metadata"]
    return {"api_version": obj["apiVersion"], "kind": obj["kind"], "namespace": meta.get("namespace"),
            "name": meta["name"]}


def owned_reads(settings):
    """What to list to find the HTTPRoutes and VirtualServices made for this Gateway, as items of
    teg.istio.cluster_facts `objects`. Needs only the declarations, so the role lists them in the same
    read as everything else."""
    selector = ["%s=%s" % (k, v) for k, v in sorted(_labels(settings).items())]
    return [{"kind": "HTTPRoute", "label_selectors": selector + [APP_LABEL]},
            {"kind": "VirtualService", "label_selectors": selector}]


def envoyproxy_routing_patch(existing, routing, api_version):
    """The EnvoyProxy change the routing mode needs, or None.

    service: routingType Service. virtualservice: a routingType Service left by an earlier run in
    service mode is removed, since the mesh VirtualService cannot match ClusterIP traffic.
    Other fields are never touched: the patch carries only routingType."""
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
