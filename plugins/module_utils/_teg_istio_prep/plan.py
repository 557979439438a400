# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the plan of the teg_istio_prep role (step 1: the TEG namespace's injection label, or in
ambient mode its istio.io/dataplane-mode label, appProtocol on the xDS port, the Envoy pods' sidecar annotations
through the EnvoyProxy the GatewayClass references, taken back in ambient mode, where the Envoy pods get the bypass
of ztunnel's inbound capture instead). read_* list what to read;
decide_* turn what was read into the writes and the errors, without I/O, unit-tested in
tests/unit/plugins/module_utils/test_teg_istio_prep*.py; plan() and teardown() glue them to one read. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils import prior
from ansible_collections.teg.istio.plugins.module_utils._diffs import merge_patch_diff
from ansible_collections.teg.istio.plugins.module_utils._gatewayclass_parameters import ref_after_absent
from ansible_collections.teg.istio.plugins.module_utils._istio_install.plan import version_after
from ansible_collections.teg.istio.plugins.module_utils._service_app_protocol import port_field
from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep.drain import (
    decide_drain,
    drain_annotations_after_teardown,
)
from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep.patches import (
    envoyproxy_pod_annotations_patch,
    envoyproxy_restoration,
    mesh_labels_patch,
)
from ansible_collections.teg.istio.plugins.module_utils.enrolment import (
    REVISION_LABEL,
    default_revision_labels,
    revision_injectors,
)
from ansible_collections.teg.istio.plugins.module_utils.names import (
    BYPASS_INBOUND_CAPTURE,
    DATAPLANE_MODE_AMBIENT,
    DATAPLANE_MODE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    describe,
    referenced_envoyproxy,
)

# The group up to Envoy Gateway v0.5, which only reads the GatewayClass's EnvoyProxy in its own namespace.
LEGACY_ENVOYPROXY_GROUP = "config.gateway.envoyproxy.io"


def _read_ratelimit_service(settings):
    # Envoy Gateway creates its rate-limit Service only while global rate limiting is configured; an empty
    # teg_istio_prep_ratelimit_service leaves it alone.
    if not settings["ratelimit_service"]:
        return {}
    return {"ratelimit_service": {"kind": "Service", "api_version": "v1", "name": settings["ratelimit_service"],
                                  "namespace": settings["namespace"]}}


def read_present(settings):
    reads = {
        "namespace": {"kind": "Namespace", "api_version": "v1", "name": settings["namespace"]},
        "service": {"kind": "Service", "api_version": "v1", "name": settings["service"],
                    "namespace": settings["namespace"]},
        # The EnvoyProxy mode create would make (or finds made by an earlier run).
        "own_envoyproxy": {"kind": "EnvoyProxy", "name": settings["envoyproxy_name"],
                           "namespace": settings["namespace"]},
    }
    reads.update(_read_ratelimit_service(settings))
    if not _ambient(settings) and not settings["revision"]:
        # Which revision "in the mesh" means on this mesh (enrolment.default_revision_labels).
        reads["webhooks"] = {"kind": "MutatingWebhookConfiguration", "api_version": "admissionregistration.k8s.io/v1"}
    return reads


def _first(read, key):
    resources = (read.get(key) or {}).get("resources") or []
    return resources[0] if resources else None


def _annotation_errors(annotations):
    bad = sorted(key for key, value in (annotations or {}).items() if not isinstance(value, str))
    if not bad:
        return []
    return ["teg_istio_prep_pod_annotations %s must be a string (write \"\" for an empty value; null would delete "
            "the annotation)" % ", ".join(bad)]


def _port_matches(service, settings):
    ports = (service.get("spec") or {}).get("ports") or []
    if settings["service_port_name"]:
        return ports, [p for p in ports if p.get("name") == settings["service_port_name"]]
    return ports, [p for p in ports if p.get("port") == settings["service_port"]]


def _port_error(service, settings):
    ports, matches = _port_matches(service, settings)
    if len(matches) == 1:
        return None
    wanted = ("named " + settings["service_port_name"]) if settings["service_port_name"] else settings["service_port"]
    return ("Service %s/%s has %s port%s %s (its ports: %s): set %s to the one xDS port (no port is ever added)"
            % (settings["namespace"], settings["service"], "no" if not matches else len(matches),
               "s" if len(matches) > 1 else "", wanted, ", ".join(str(p.get("port")) for p in ports),
               "teg_istio_prep_service_port_name" if len(matches) > 1 else
               "teg_istio_prep_service_port or teg_istio_prep_service_port_name"))


def _cluster_errors(facts, read, settings):
    """What stops the role before anything else can be decided, in the order a reader would fix it."""
    if not _first(read, "namespace"):
        return ["namespace %s not found: set teg_istio_prep_namespace to the namespace TEG (Envoy Gateway) is "
                "installed in" % settings["namespace"]]
    envoyproxy = facts.get("envoyproxy")
    if envoyproxy is None:
        return ["no API group serves envoyproxies (neither gateway.envoyproxy.io nor config.gateway.envoyproxy.io): "
                "install TEG / Envoy Gateway with its CRDs before this role"]
    if _ambient(settings) and not envoyproxy.get("routing_type"):
        # expose_app sets routingType Service in ambient mode (pod-IP routing would bypass a waypoint:
        # istio/istio#51214, #51482); Envoy Gateway serves the field from v1.1 (envoyproxy/gateway#3543).
        return ["teg_istio_prep_mesh_mode ambient needs the EnvoyProxy's spec.routingType (Envoy Gateway v1.1 or "
                "later), which the EnvoyProxy API %s does not have: upgrade TEG / Envoy Gateway, or set "
                "teg_istio_prep_mesh_mode to sidecar" % envoyproxy["api_version"]]
    if not envoyproxy["pod_annotations"]:
        return ["the EnvoyProxy API %s has no spec.provider.kubernetes.envoyDeployment.pod.annotations (Envoy Gateway "
                "older than v0.4): upgrade TEG / Envoy Gateway to v0.4 or later" % envoyproxy["api_version"]]
    if facts.get("gatewayclass") is None:
        if facts.get("gateway_api") is not None:
            return ["GatewayClass %s not found: set teg_istio_prep_gatewayclass to the GatewayClass TEG installed "
                    "(kubectl get gatewayclass)" % settings["gatewayclass"]]
        return ["the Gateway API (gateway.networking.k8s.io gatewayclasses) is not served, so GatewayClass %s cannot "
                "exist: install TEG / Envoy Gateway with its CRDs first" % settings["gatewayclass"]]
    errors = []
    service = _first(read, "service")
    if not service:
        errors.append("Service %s/%s not found: set teg_istio_prep_service to Envoy Gateway's control-plane Service"
                      % (settings["namespace"], settings["service"]))
    else:
        error = _port_error(service, settings)
        if error:
            errors.append(error)
    ratelimit = _first(read, "ratelimit_service")
    if ratelimit and _ratelimit_port(ratelimit, settings) is None:
        errors.append("Service %s/%s has no port %s (its ports: %s): set teg_istio_prep_ratelimit_service_port to its "
                      "gRPC port, or teg_istio_prep_ratelimit_service to \"\" to leave it alone"
                      % (settings["namespace"], settings["ratelimit_service"], settings["ratelimit_service_port"],
                         ", ".join(str(p.get("port")) for p in (ratelimit.get("spec") or {}).get("ports") or [])))
    return errors


def _ratelimit_port(service, settings):
    """The rate-limit Service's gRPC port (Envoy Gateway names it http, so Istio would take its TLS for HTTP)."""
    ports = ((service or {}).get("spec") or {}).get("ports") or []
    return next((p for p in ports if p.get("port") == settings["ratelimit_service_port"]), None)


def _ambient(settings):
    return settings["mesh_mode"] == "ambient"


def _mesh_mode_errors(settings):
    if _ambient(settings) and settings["revision"]:
        return ["teg_istio_prep_revision %s chooses a sidecar injector, which ambient mode does not use (the namespace "
                "gets %s=%s and loses istio.io/rev): set teg_istio_prep_revision to \"\", or "
                "teg_istio_prep_mesh_mode to sidecar" % (settings["revision"], DATAPLANE_MODE_LABEL,
                                                         DATAPLANE_MODE_AMBIENT)]
    return []


def _sidecar_annotations_taken_back(envoyproxy, settings, where):
    """(annotations to remove, annotations to set) that take the sidecar annotations off `envoyproxy` (as read):
    the role's pod annotations and, unless teg_istio_prep_sidecar_drain is none, the drain annotations
    (drain.py), of which proxy.istio.io/config may only lose its terminationDrainDuration."""
    remove, replace = [], {}
    if settings["sidecar_drain"] != "none":
        remove, replace = drain_annotations_after_teardown(envoyproxy, where)
    return sorted(set(settings["pod_annotations"]) | set(remove)), replace


def decide_mode(facts, settings):
    if settings["envoyproxy_mode"] != "auto":
        return settings["envoyproxy_mode"]
    return "merge" if facts["gatewayclass"]["parameters_ref"] is not None else "create"


def _merge_errors(facts, settings):
    ref = facts["gatewayclass"]["parameters_ref"]
    group = facts["envoyproxy"]["group"]
    name = settings["gatewayclass"]
    if ref is None:
        return ["GatewayClass %s has no parametersRef, so mode merge has no EnvoyProxy to annotate: set "
                "teg_istio_prep_envoyproxy_mode to create or auto" % name]
    if ref.get("kind") != "EnvoyProxy" or ref.get("group") != group:
        return ["GatewayClass %s parametersRef points at %s of group %s, not at an EnvoyProxy of %s: set "
                "teg_istio_prep_envoyproxy_mode to create to replace the reference"
                % (name, ref.get("kind"), ref.get("group"), group)]
    return []


def _istio_version(facts, settings):
    """The Istio version the Envoy pods will be injected by: the one set (teg_istio_prep_istio_version, else what
    plan() read: _istio_install.plan.version_after), else the running istiod's image tag in `facts`; None when
    neither tells."""
    if settings["istio_version"]:
        return settings["istio_version"]
    return ((facts.get("istio") or {}).get("istiod") or {}).get("version")


def decide_present(facts, read, settings, check_mode):
    """(decisions, errors): what step 1 writes, from the facts (cluster_facts' `cluster` with the
    GatewayClass) and the read of read_present()."""
    errors = _annotation_errors(settings["pod_annotations"]) + _mesh_mode_errors(settings)
    if errors:
        return None, errors
    errors = _cluster_errors(facts, read, settings)
    if errors:
        return None, errors
    mode = decide_mode(facts, settings)
    if mode == "merge":
        errors = _merge_errors(facts, settings)
        if errors:
            return None, errors
        target = referenced_envoyproxy(facts["gatewayclass"]["parameters_ref"])
        envoyproxy = facts["gatewayclass"]["envoyproxy"]
    else:
        target = {"name": settings["envoyproxy_name"], "namespace": settings["namespace"]}
        envoyproxy = _first(read, "own_envoyproxy")
    where = describe("EnvoyProxy", target["name"], target["namespace"])
    group = facts["envoyproxy"]["group"]
    if group == LEGACY_ENVOYPROXY_GROUP and target["namespace"] != settings["namespace"]:
        return None, ["GatewayClass %s references %s, but Envoy Gateway %s (v0.5 or older) only reads EnvoyProxies in "
                      "%s: set teg_istio_prep_envoyproxy_mode to create"
                      % (settings["gatewayclass"], where, group, settings["namespace"])]
    if mode == "merge" and envoyproxy is None:
        return None, ["GatewayClass %s references %s, which does not exist: create it, or set "
                      "teg_istio_prep_envoyproxy_mode to create" % (settings["gatewayclass"], where)]
    provider = ((envoyproxy or {}).get("spec") or {}).get("provider") or {}
    if provider.get("type", "Kubernetes") != "Kubernetes":
        return None, ["%s has provider type %s; pod annotations need type Kubernetes: choose another EnvoyProxy "
                      "(teg_istio_prep_envoyproxy_name with mode create)" % (where, provider.get("type"))]

    api_version = facts["envoyproxy"]["api_version"]
    revision = settings["revision"]
    if "webhooks" in read:
        labels, error = default_revision_labels(revision_injectors(read["webhooks"]["resources"]),
                                                "Namespace %s" % settings["namespace"], "teg_istio_prep_revision")
        if error:
            return None, [error]
        revision = labels.get(REVISION_LABEL, "")
    namespace_patch, error = mesh_labels_patch(_first(read, "namespace"), revision,
                                               mesh_mode=settings["mesh_mode"],
                                               enrol_opted_out=settings.get("enrol_opted_out", False))
    if error:
        return None, [error]
    if _ambient(settings):
        # No sidecar: the Envoy pods get none of the sidecar annotations, and those sidecar mode set are taken back.
        # They get the bypass of inbound capture instead: their inbound comes from clients outside the mesh in
        # plaintext, which ztunnel would refuse under STRICT; their outbound stays captured (HBONE to the apps).
        drain = {"mode": "none", "annotations": {}, "reason": "teg_istio_prep_mesh_mode is ambient: no sidecar"}
        annotations = dict(BYPASS_INBOUND_CAPTURE)
        remove, replace = _sidecar_annotations_taken_back(envoyproxy, settings, where)
        envoyproxy_patch = envoyproxy_pod_annotations_patch(envoyproxy, dict(annotations, **replace), api_version,
                                                            target["name"], target["namespace"], remove=remove)
    else:
        drain, errors = decide_drain(settings["sidecar_drain"], envoyproxy, where, _istio_version(facts, settings),
                                     facts.get("kubernetes_version"), facts["envoyproxy"].get("shutdown"),
                                     settings["pod_annotations"])
        if errors:
            return None, errors
        annotations = dict(settings["pod_annotations"], **drain["annotations"])
        # The bypass ambient mode set goes: a sidecar's inbound is left alone by includeInboundPorts "".
        envoyproxy_patch = envoyproxy_pod_annotations_patch(envoyproxy, annotations, api_version,
                                                            target["name"], target["namespace"],
                                                            remove=list(BYPASS_INBOUND_CAPTURE))
    port = _port_matches(_first(read, "service"), settings)[1][0]
    wanted_ref = {"group": group, "kind": "EnvoyProxy", "name": target["name"], "namespace": target["namespace"]}
    point_gatewayclass = mode == "create" and facts["gatewayclass"]["parameters_ref"] != wanted_ref
    decisions = {
        "mode": mode,
        "envoyproxy": target,
        # One kubernetes.core.k8s call (state present, merge): the namespace exists (read above), the
        # EnvoyProxy may have to be created.
        "objects": [d for d in (namespace_patch, envoyproxy_patch) if d],
        # What the Envoy pods get from this role once written: the role's annotations and how their sidecar
        # outlives Envoy's drain (module_utils/_teg_istio_prep/drain.py); none in ambient mode.
        "pod_annotations": annotations,
        "sidecar_drain": {"mode": drain["mode"], "reason": drain["reason"]},
        "service_port": port.get("appProtocol") != settings["app_protocol"],
        # Hop 4b of docs/traffic-simulation.md: without it envoy-ratelimit's sidecar refuses the Envoy pods'
        # TLS under STRICT. Envoy Gateway server-side-applies that Service without appProtocol, so the field
        # set here survives its reconciling.
        "ratelimit_port": _ratelimit_port_differs(_first(read, "ratelimit_service"), settings),
        # What the module service_app_protocol records on each Service it changes, for the summary of the
        # owners' settings (prior.owners_settings); the module computes it again from the Service it reads.
        "service_records": [r for r in (
            _port_record(_first(read, "service"), port, settings),
            _port_record(_first(read, "ratelimit_service"), _ratelimit_port(_first(read, "ratelimit_service"), settings),
                         settings)) if r],
        "gatewayclass": {
            "name": target["name"], "namespace": target["namespace"],
            # In check mode a new EnvoyProxy was only created as a dry run, so it cannot be read back yet.
            "must_exist": envoyproxy is not None or not check_mode,
        } if point_gatewayclass else None,
    }
    diff = []
    if namespace_patch:
        diff.append(merge_patch_diff(_first(read, "namespace"), namespace_patch))
    if envoyproxy_patch:
        diff.append(merge_patch_diff(envoyproxy, envoyproxy_patch))
    decisions["diff"] = diff
    return decisions, []


def _port_record(service, port, settings):
    """The Service's name and record of prior values once `port` gets appProtocol, as a definition; None when the port
    already has it."""
    if port is None or port.get("appProtocol") == settings["app_protocol"]:
        return None
    record = prior.record_annotation(service, {port_field(port): settings["app_protocol"]})
    if record is None:
        return None
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service["metadata"]["name"], "namespace": service["metadata"]["namespace"],
                         "annotations": {prior.PRIOR_ANNOTATION: record}}}


def _ratelimit_port_differs(service, settings):
    port = _ratelimit_port(service, settings)
    return port is not None and port.get("appProtocol") != settings["app_protocol"]


def _labels_after(namespace, patch):
    labels = dict(((namespace or {}).get("metadata") or {}).get("labels") or {})
    for key, value in (((patch or {}).get("metadata") or {}).get("labels") or {}).items():
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
    return labels


def predictions(facts, read, settings, decisions):
    """What step 1 leaves for the later roles to see, before it is written (check mode, site plan)."""
    namespace_patch = next((d for d in decisions["objects"] if d["kind"] == "Namespace"), None)
    annotations = dict(decisions["pod_annotations"])
    return {
        "teg_namespace": {"name": settings["namespace"],
                          "labels": _labels_after(_first(read, "namespace"), namespace_patch)},
        "gatewayclass": {
            "name": settings["gatewayclass"],
            "parameters_ref": {"group": facts["envoyproxy"]["group"], "kind": "EnvoyProxy",
                               "name": decisions["envoyproxy"]["name"],
                               "namespace": decisions["envoyproxy"]["namespace"]},
        },
        "envoyproxy_pod_annotations": annotations,
    }


def plan(view, settings, predicted, check_mode):
    if settings["state"] == "absent":
        return teardown(view, settings)
    # The versions decide how the sidecar outlives Envoy's drain: the API server's, and that of the Istio that will
    # inject the Envoy pods when teg_istio_prep_istio_version does not say: read as istio_install reads it, the
    # running Istio's where istio_install uses one it did not install, else istio_install_version.
    if not _ambient(settings) and settings["sidecar_drain"] in ("auto", "native") and not settings["istio_version"]:
        settings = dict(settings, istio_version=version_after(view, settings["istio_install"]) or "")
    facts = view.facts(gatewayclass=settings["gatewayclass"], parts={"envoyproxy_schema", "version"})
    read = view.read(facts, read_present(settings))
    decisions, errors = decide_present(facts, read, settings, check_mode)
    if errors:
        return {"errors": errors}
    diff = decisions.pop("diff")
    changes = (bool(decisions["objects"]) or decisions["service_port"] or decisions["ratelimit_port"]
               or decisions["gatewayclass"] is not None)
    return {"errors": [], "writes": decisions, "changes": changes, "predicts": predictions(facts, read, settings, decisions),
            "diff": diff}


def read_absent(settings, facts):
    reads = {
        "namespace": {"kind": "Namespace", "api_version": "v1", "name": settings["namespace"]},
        "service": {"kind": "Service", "api_version": "v1", "name": settings["service"],
                    "namespace": settings["namespace"]},
        # Served or not, the key is there: an unserved kind reads as no objects.
        "owned_envoyproxies": {"kind": "EnvoyProxy", "namespace": settings["namespace"],
                               "label_selectors": ["%s=%s" % (MANAGED_BY_LABEL, MANAGED_BY_VALUE)]},
    }
    reads.update(_read_ratelimit_service(settings))
    if facts.get("gatewayclass") is not None:
        reads["gatewayclass"] = {"kind": "GatewayClass", "name": settings["gatewayclass"]}
    return reads


def _ports_recorded(service):
    """Whether `service` (as read) carries a record of prior appProtocol values, which the module
    service_app_protocol gives back (a Service without one is left alone)."""
    return any(field.startswith("/spec/ports/") for field in prior.recorded(service))


def decide_absent(facts, read, envoyproxies, settings):
    """(writes, warnings) of the teardown: the GatewayClass reference this collection set taken back (restoring the
    one it replaced), the pod annotations of the EnvoyProxies it did not create (`envoyproxies`, as read: the one
    the GatewayClass references then, and the one of teg_istio_prep_envoyproxy_name) given back as their record
    says, the EnvoyProxies this collection made deleted, and the appProtocol and the namespace labels it recorded
    given back."""
    owned = (read.get("owned_envoyproxies") or {}).get("resources") or []
    owned_names = set((o["metadata"]["namespace"], o["metadata"]["name"]) for o in owned)
    patches, warnings, seen = [], [], set()
    for envoyproxy in envoyproxies:
        key = (envoyproxy["metadata"]["namespace"], envoyproxy["metadata"]["name"])
        if key in owned_names or key in seen:
            continue
        seen.add(key)
        restoration, left = envoyproxy_restoration(envoyproxy, facts["envoyproxy"]["api_version"])
        warnings.extend("%s: %s was changed since teg.istio set it, so it is left as it is"
                        % (describe("EnvoyProxy", key[1], key[0]), field) for field in left)
        if restoration:
            patches.append(restoration)
    namespace = _first(read, "namespace")
    if namespace:
        # What the record on the namespace says the collection changed, of both modes' labels, given back.
        unlabel = mesh_labels_patch(namespace, "", "absent")[0]
        if unlabel:
            patches.append(unlabel)
    gatewayclass = _first(read, "gatewayclass")
    return {
        "gatewayclass": gatewayclass is not None and ref_after_absent(gatewayclass)[1],
        "patches": patches,
        "delete": [{"apiVersion": o["apiVersion"], "kind": o["kind"],
                    "metadata": {"name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"]}}
                   for o in owned],
        "service_port": _ports_recorded(_first(read, "service")),
        "ratelimit_port": _ports_recorded(_first(read, "ratelimit_service")),
    }, warnings


def teardown(view, settings):
    facts = view.facts(gatewayclass=settings["gatewayclass"], parts={"envoyproxy"})
    read = view.read(facts, read_absent(settings, facts))
    envoyproxies = []
    gatewayclass = _first(read, "gatewayclass")
    if facts.get("envoyproxy") is not None:
        api_version = facts["envoyproxy"]["api_version"]
        # The EnvoyProxy the GatewayClass references once the teardown took back what it set, and the one mode
        # create uses, which may be one the collection found there and annotated.
        target = referenced_envoyproxy(ref_after_absent(gatewayclass)[0], facts["envoyproxy"]["group"]) \
            if gatewayclass is not None else None
        for where in (target, {"name": settings["envoyproxy_name"], "namespace": settings["namespace"]}):
            envoyproxy = view.get(api_version, "EnvoyProxy", where["name"], where["namespace"]) if where else None
            if envoyproxy:
                envoyproxies.append(envoyproxy)
    writes, warnings = decide_absent(facts, read, envoyproxies, settings)
    return {"errors": [], "writes": writes, "warnings": warnings, "changes": any(writes.values())}
