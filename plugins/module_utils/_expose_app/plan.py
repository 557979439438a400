# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the plan of the expose_app role (steps 4 and 5: the apps in the mesh, exposed at
the TEG edge with routes the mesh agrees with). One read of everything the declarations name, the
checks, the render, then one server-side dry run of the objects that can be dry-run, so that only
those that differ are written. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.teg.istio.plugins.module_utils._diffs import changed_definitions, dry_run_diffs
from ansible_collections.teg.istio.plugins.module_utils._expose_app.backends import check_backends, reads
from ansible_collections.teg.istio.plugins.module_utils._expose_app.changes import (
    describe_all,
    known_absent,
    mode_labels,
    namespace_objects,
    split_pending,
    stale_objects,
    unlabel_patches,
)
from ansible_collections.teg.istio.plugins.module_utils._expose_app.inputs import input_errors
from ansible_collections.teg.istio.plugins.module_utils._expose_app.render import envoyproxy_routing_patch, render
from ansible_collections.teg.istio.plugins.module_utils.enrolment import declaration_error
from ansible_collections.teg.istio.plugins.module_utils.names import (
    GATEWAY_LABEL,
    GATEWAY_NAMESPACE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
)

# The Istio kinds this role writes: not dry-run while Istio is only predicted (not installed yet).
ISTIO_KINDS = ["VirtualService"]


def with_predictions(facts, predicted):
    """`facts` as the cluster will be when this role writes, after the roles before it in the same run:
    the Istio APIs of a predicted install, and the GatewayClass reference teg_istio_prep will set.
    Adds `pending_kinds`, the kinds not served yet, which cannot be dry-run."""
    cluster = copy.deepcopy(facts)
    cluster["pending_kinds"] = []
    istio = (predicted or {}).get("istio") or {}
    if istio and not cluster["istio"].get("virtualservice_api_version"):
        cluster["istio"]["virtualservice_api_version"] = istio["virtualservice_api_version"]
        cluster["istio"]["peerauthentication_api_version"] = istio["peerauthentication_api_version"]
        cluster["pending_kinds"] = list(ISTIO_KINDS)
    gatewayclass = (predicted or {}).get("gatewayclass") or {}
    if cluster.get("gatewayclass") and gatewayclass.get("name") == cluster["gatewayclass"]["name"]:
        if gatewayclass["parameters_ref"] != cluster["gatewayclass"]["parameters_ref"]:
            cluster["gatewayclass"]["parameters_ref"] = gatewayclass["parameters_ref"]
            # An EnvoyProxy teg_istio_prep creates: not there to read yet.
            cluster["gatewayclass"]["envoyproxy"] = None
            cluster["envoyproxy_pending"] = True
    return cluster


def _namespace_errors(settings, found):
    wanted = [settings["gateway"]["namespace"]]
    if settings["routing"] == "virtualservice":
        wanted.append(settings["virtualservice"]["namespace"])
    return ["namespace %s does not exist: create it, or set expose_app_gateway_namespace / "
            "expose_app_virtualservice_namespace to the namespace of the TEG Envoy proxies" % ns
            for ns in sorted(set(wanted)) if not found["namespaces"][ns]["exists"]]


def existing_gateway_errors(settings, apps, found):
    """With expose_app_gateway_create false, the routes attach to a Gateway the platform team owns: one line each
    when it does not exist, lacks a listener an app names (section_name), or no listener that an app's routes would
    attach to admits routes from that app's namespace (Gateway API allowedRoutes: Same, All, or a Selector's
    matchLabels against the namespace's labels)."""
    gateway = settings["gateway"]
    if gateway.get("create", True) or not apps:
        return []
    where = "Gateway %s/%s" % (gateway["namespace"], gateway["name"])
    existing = (found["listed"].get(("Gateway", gateway["namespace"])) or {}).get(gateway["name"])
    if existing is None:
        return ["%s does not exist: create it, or set expose_app_gateway_create: true to let the role create it"
                % where]
    listeners = dict((listener.get("name"), listener) for listener in (existing.get("spec") or {}).get("listeners") or [])
    errors = []
    for app in apps:
        section = app.get("section_name")
        if section and section not in listeners:
            errors.append("app %s: %s has no listener %s (it has %s): set the app's section_name to one of them"
                          % (app["name"], where, section, ", ".join(sorted(listeners)) or "none"))
            continue
        candidates = [listeners[section]] if section else list(listeners.values())
        labels = (found["namespaces"].get(app["namespace"]) or {}).get("labels") or {}
        if not any(_admits(listener, app["namespace"], gateway["namespace"], labels) for listener in candidates):
            errors.append("app %s: no listener of %s admits routes from namespace %s (allowedRoutes): allow it on "
                          "the Gateway, or set section_name to a listener that does"
                          % (app["name"], where, app["namespace"]))
    return errors


def _admits(listener, namespace, gateway_namespace, labels):
    allowed = ((listener.get("allowedRoutes") or {}).get("namespaces") or {})
    origin = allowed.get("from") or "Same"
    if origin == "All":
        return True
    if origin == "Same":
        return namespace == gateway_namespace
    selector = allowed.get("selector") or {}
    # matchExpressions are left to Envoy Gateway: a listener that has them is taken as admitting.
    return bool(selector.get("matchExpressions")) or all(
        labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _envoyproxy(cluster, routing):
    """The EnvoyProxy whose routingType the routing mode sets (None without routingType in its API). With
    virtualservice routing only one that carries routingType matters (to take back a Service an earlier
    run in service mode set), so the object itself tells, and the schema is not read."""
    envoyproxy = (cluster.get("gatewayclass") or {}).get("envoyproxy")
    if routing == "service":
        return envoyproxy if (cluster.get("envoyproxy") or {}).get("routing_type") else None
    return envoyproxy if "routingType" in ((envoyproxy or {}).get("spec") or {}) else None


def effective_settings(settings):
    """`settings` with the routing the mesh mode allows. Ambient has no mesh VirtualService (ztunnel does not
    read them, and the sidecar that applied them is gone), so the edge does what it did: service routing, the
    HTTPRoute rewriting path and Host and Envoy Gateway sending to the Service's ClusterIP, whatever
    expose_app_routing says (README, expose_app)."""
    if settings.get("mesh_mode") == "ambient" and settings.get("routing") == "virtualservice":
        return dict(settings, routing="service")
    return settings


def plan(view, settings, predicted, check_mode):
    if settings["state"] == "absent":
        return teardown(view, settings)
    settings = effective_settings(settings)
    errors = input_errors(settings["apps"], settings)
    both = declaration_error(settings["namespace_labels"], "expose_app_namespace_labels")
    errors += [both] if both else []
    if errors:
        return {"errors": errors}
    # The EnvoyProxy CRD (large) is read only where its routingType field decides something.
    parts = {"istio_apis"} | ({"envoyproxy_schema"} if settings["routing"] == "service" else set())
    facts = view.facts(gatewayclass=settings["gateway"]["class"], parts=parts)
    cluster = with_predictions(facts, predicted)
    rendered = render(settings["apps"], dict(settings, cluster=cluster))
    if rendered["errors"]:
        return {"errors": rendered["errors"]}
    wanted = reads(settings["apps"], settings, settings["prune"])
    found = check_backends(rendered, wanted, view.read(facts, wanted), settings["routing"])
    errors = found["errors"] + _namespace_errors(settings, found) + existing_gateway_errors(settings, rendered["apps"],
                                                                                            found)
    envoyproxy = _envoyproxy(cluster, settings["routing"])
    ref = rendered["envoyproxy_ref"]
    if settings["routing"] == "service" and envoyproxy is None and not cluster.get("envoyproxy_pending"):
        errors.append("EnvoyProxy %s/%s (referenced by GatewayClass %s) not found: create it (teg_istio_prep) or fix "
                      "the GatewayClass parametersRef" % (ref["namespace"], ref["name"], settings["gateway"]["class"]))
    if errors:
        return {"errors": errors}

    envoyproxy_patch = envoyproxy_routing_patch(envoyproxy, settings["routing"],
                                                (facts.get("envoyproxy") or {}).get("api_version"))
    objects = ([envoyproxy_patch] if envoyproxy_patch else []) + rendered["objects"]
    # Objects in a namespace that does not exist yet cannot be dry-run, nor kinds not served yet: they
    # are new, so they are written as they are (in check mode, reported as to be created).
    new_namespaces = [ns for ns, info in found["namespaces"].items() if not info["exists"]]
    batches = split_pending(objects, new_namespaces, cluster["pending_kinds"])
    ready = batches["ready"]
    absent = []
    if not (check_mode or settings["planning"]):
        # What the lists read show is not there yet is created by the apply that follows, which validates
        # it then: a dry run first would only double the requests. site.yml's plan of every role and check
        # mode dry-run them too, so that an object the API server refuses stops the run before any write.
        absent = known_absent(ready, found["listed"])
        ready = [d for d in ready if d not in absent]
    results = view.dry_run(ready) if ready else []
    changed = changed_definitions(ready, results)
    labels, unwanted = mode_labels(settings.get("mesh_mode"), settings["namespace_labels"])
    namespaces, errors = namespace_objects(rendered, found["namespaces"], labels,
                                           settings["sample"]["namespace"] if settings["sample"]["enabled"] else None,
                                           unwanted, settings.get("enrol_opted_out") or ())
    if errors:
        return {"errors": errors}
    pending = batches["pending"]
    if cluster.get("envoyproxy_pending") and settings["routing"] == "service":
        notes = ["EnvoyProxy %s/%s routingType Service, once teg_istio_prep has created it"
                 % (ref["namespace"], ref["name"])]
    else:
        notes = []
    writes = {
        # One k8s_objects call, in this order: the namespaces first, so that objects in a new one can be
        # created; then those that differ; then those known to be new (the lists read do not have them, or their
        # namespace or kind is new), created without a read first. In check mode the new namespace is a dry
        # run only, so what goes into it is reported instead.
        "apply": namespaces + changed,
        "create": absent + ([] if check_mode else pending),
        "prune": stale_objects(found["managed"], rendered) if settings["prune"] else [],
        "would_create": describe_all(pending) + notes if check_mode else [],
    }
    return {
        "errors": [],
        "writes": writes,
        "changes": any(writes.values()),
        "diff": dry_run_diffs(ready, results) + ["%s: created" % name for name in describe_all(absent)],
        "predicts": {"namespaces": dict((ns["metadata"]["name"], dict(
            (k, v) for k, v in ns["metadata"]["labels"].items() if v is not None)) for ns in namespaces)},
    }


def _this_gateway(settings):
    return ["%s=%s" % (MANAGED_BY_LABEL, MANAGED_BY_VALUE), "%s=%s" % (GATEWAY_LABEL, settings["gateway"]["name"]),
            "%s=%s" % (GATEWAY_NAMESPACE_LABEL, settings["gateway"]["namespace"])]


def read_absent(settings):
    ours = ["%s=%s" % (MANAGED_BY_LABEL, MANAGED_BY_VALUE)]
    sample_ns = settings["sample"]["namespace"]
    # The sample lives in its own namespace; other roles label what they create the same way (the
    # istio-system istio_install creates), so nothing outside the sample's namespace is looked at.
    return {
        "VirtualServices made for the Gateway": {"kind": "VirtualService", "label_selectors": _this_gateway(settings)},
        "HTTPRoutes made for the Gateway": {"kind": "HTTPRoute", "label_selectors": _this_gateway(settings)},
        "the Gateway": {"kind": "Gateway", "label_selectors": _this_gateway(settings)},
        "sample Deployments": {"kind": "Deployment", "api_version": "apps/v1", "label_selectors": ours,
                               "namespace": sample_ns},
        "sample Services": {"kind": "Service", "api_version": "v1", "label_selectors": ours, "namespace": sample_ns},
        "sample ServiceAccounts": {"kind": "ServiceAccount", "api_version": "v1", "label_selectors": ours,
                                   "namespace": sample_ns},
        "sample Namespace": {"kind": "Namespace", "api_version": "v1", "name": sample_ns},
        "namespaces": {"kind": "Namespace", "api_version": "v1"},
    }


def _deletion(obj):
    meta = obj["metadata"]
    stub = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {"name": meta["name"]}}
    if meta.get("namespace"):
        stub["metadata"]["namespace"] = meta["namespace"]
    return stub


def decide_absent(facts, read, settings):
    found = dict((key, (value or {}).get("resources") or []) for key, value in read.items())
    deletions = []
    for key in ("VirtualServices made for the Gateway", "HTTPRoutes made for the Gateway", "the Gateway",
                "sample Deployments", "sample Services", "sample ServiceAccounts"):
        deletions.extend(_deletion(o) for o in found[key])
    # The sample's namespace goes only when this collection created it.
    deletions.extend(_deletion(o) for o in found["sample Namespace"]
                     if ((o["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL)) == MANAGED_BY_VALUE)
    app_namespaces = [app.get("namespace") for app in settings["apps"] if isinstance(app, dict)]
    # What the record on each app namespace says the collection changed, given back.
    patches = unlabel_patches(found["namespaces"], app_namespaces)
    envoyproxy = _envoyproxy(facts, "virtualservice")
    routing = envoyproxy_routing_patch(envoyproxy, "virtualservice", (facts.get("envoyproxy") or {}).get("api_version"))
    if routing:
        patches.append(routing)
    return {"delete": deletions, "patches": patches}


def teardown(view, settings):
    """Everything the role made for this Gateway (found by its labels, so objects someone else made are
    never touched), the injection (or ambient) labels off the app namespaces, and a routingType Service it set."""
    facts = view.facts(gatewayclass=settings["gateway"]["class"], parts={"istio_apis"})
    writes = decide_absent(facts, view.read(facts, read_absent(settings)), settings)
    return {"errors": [], "writes": writes, "changes": any(writes.values())}
