# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure checks for teg.istio.mesh_verify: what the cluster holds in, one line per problem out.

The module reads the objects and hands them here; every rule of "steps 1 to 6 are in place and agree
with each other" is decided in this file and unit-tested in tests/unit/test_verify.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils._strict_mtls.policies import (
    exceptions_line,
    permissive_exceptions,
)
from ansible_collections.teg.istio.plugins.module_utils.enrolment import INJECTION_LABELS, label_changes
from ansible_collections.teg.istio.plugins.module_utils.names import (
    APP_LABEL,
    BYPASS_INBOUND_CAPTURE,
    DATAPLANE_MODE_AMBIENT,
    DATAPLANE_MODE_LABEL,
    DRAIN_ANNOTATIONS,
    GATEWAY_LABEL,
    GATEWAY_NAMESPACE_LABEL,
    ambient_enrolled,
    describe,
    pod_serving,
    referenced_envoyproxy,
    sidecar_container,
)

INCLUDE_INBOUND = "traffic.sidecar.istio.io/includeInboundPorts"
# The DaemonSets of Istio's ambient data plane (charts cni and ztunnel), in Istio's namespace.
AMBIENT_DAEMONSETS = ("ztunnel", "istio-cni-node")


def _ambient(expected):
    return expected.get("mesh_mode") == "ambient"


def _meta(obj):
    return (obj or {}).get("metadata") or {}


def _where(obj):
    meta = _meta(obj)
    return describe(obj.get("kind", "object"), meta.get("name"), meta.get("namespace"))


def _prep_findings(observed, expected):
    findings = []
    ns_name = expected["teg_namespace"]
    namespace = observed.get("teg_namespace")
    if not namespace:
        return ["Namespace %s does not exist: install TEG there or set verify_teg_namespace" % ns_name]
    labels = _meta(namespace).get("labels") or {}
    # In the mesh the way module_utils/enrolment.py puts it there: a namespace already on a revision its owners chose
    # passes where no revision is asked for, and one with istio-injection beside the revision asked for does not.
    missing = {} if _ambient(expected) else label_changes(labels, expected["injection_labels"])
    for key, value in sorted(missing.items()):
        findings.append("Namespace %s has label %s=%r, expected %s: run the teg_istio_prep role"
                        % (ns_name, key, labels.get(key), "no such label" if value is None else repr(value)))

    service = observed.get("service")
    where = describe("Service", expected["service"], ns_name)
    if not service:
        findings.append("%s does not exist: set verify_service to TEG's xDS Service" % where)
    else:
        findings += _app_protocol_findings(service, where, expected["service_port"], expected["app_protocol"],
                                           "verify_service_port")
    # Envoy Gateway's rate-limit Service exists only while global rate limiting is configured.
    ratelimit = observed.get("ratelimit_service")
    if expected.get("ratelimit_service") and ratelimit:
        findings += _app_protocol_findings(ratelimit, describe("Service", expected["ratelimit_service"], ns_name),
                                           expected["ratelimit_service_port"], expected["app_protocol"],
                                           "verify_ratelimit_service_port")

    gatewayclass = observed.get("gatewayclass")
    if not gatewayclass:
        findings.append("GatewayClass %s does not exist: set verify_gatewayclass" % expected["gatewayclass"])
        return findings
    ref = gatewayclass.get("parameters_ref")
    if not ref:
        findings.append("GatewayClass %s references no EnvoyProxy (spec.parametersRef): run the teg_istio_prep role"
                        % expected["gatewayclass"])
        return findings
    target = referenced_envoyproxy(ref)
    if not target:
        findings.append("GatewayClass %s references %s %s, not an EnvoyProxy: run the teg_istio_prep role"
                        % (expected["gatewayclass"], ref.get("kind"), ref.get("name")))
        return findings
    envoyproxy = observed.get("envoyproxy")
    ep_where = describe("EnvoyProxy", target["name"], target["namespace"])
    if not envoyproxy:
        findings.append("%s, which GatewayClass %s references, does not exist: run the teg_istio_prep role"
                        % (ep_where, expected["gatewayclass"]))
        return findings
    pod = ((((envoyproxy.get("spec") or {}).get("provider") or {}).get("kubernetes") or {})
           .get("envoyDeployment") or {}).get("pod") or {}
    annotations = pod.get("annotations") or {}
    if _ambient(expected):
        for key in sorted(set(annotations) & set((INCLUDE_INBOUND,) + DRAIN_ANNOTATIONS)):
            findings.append("%s sets the sidecar pod annotation %s, which ambient mode does without: run the "
                            "teg_istio_prep role in ambient mode" % (ep_where, key))
        for key, value in BYPASS_INBOUND_CAPTURE.items():
            if annotations.get(key) != value:
                findings.append("%s sets pod annotation %s=%r, expected %r (else ztunnel captures the Envoy pods' "
                                "inbound and, under STRICT, refuses the plaintext of clients outside the mesh): run "
                                "the teg_istio_prep role in ambient mode"
                                % (ep_where, key, annotations.get(key, "<unset>"), value))
    else:
        for key, value in expected["pod_annotations"].items():
            if key not in annotations or annotations[key] != value:
                findings.append("%s sets pod annotation %s=%r, expected %r: run the teg_istio_prep role"
                                % (ep_where, key, annotations.get(key, "<unset>"), value))
    if ((expected.get("routing") == "service" or _ambient(expected))
            and (envoyproxy.get("spec") or {}).get("routingType") != "Service"):
        findings.append("%s has routingType %r, expected 'Service' for %s: run the expose_app role"
                        % (ep_where, (envoyproxy.get("spec") or {}).get("routingType"),
                           "ambient mode (pod-IP routing bypasses waypoints)" if _ambient(expected)
                           else "expose_app_routing service"))
    return findings


def _app_protocol_findings(service, where, port, app_protocol, port_variable):
    ports = [p for p in (service.get("spec") or {}).get("ports") or [] if p.get("port") == port]
    if not ports:
        return ["%s has no port %s: set %s" % (where, port, port_variable)]
    if ports[0].get("appProtocol") != app_protocol:
        # The usual cause once it was in place: an upgrade or a GitOps sync of TEG replaced the Service with
        # the chart's (or the controller's) ports, which carry no appProtocol. istiod pushes the restored
        # protocol to the sidecars, so a rerun of site.yml restores it without restarting anything.
        return ["%s port %s (%s) has appProtocol %r, expected %r (a TEG upgrade or GitOps sync that replaces the "
                "Service drops it): rerun site.yml or the teg_istio_prep role, and make it permanent in TEG's Helm "
                "values (README, Running it in production)"
                % (where, port, ports[0].get("name"), ports[0].get("appProtocol"), app_protocol)]
    return []


def _route_claims(httproute):
    """(hostname, path prefix, backend fqdn, port) for every PathPrefix match of an HTTPRoute."""
    spec = httproute.get("spec") or {}
    namespace = _meta(httproute).get("namespace")
    claims = []
    for rule in spec.get("rules") or []:
        backends = [(b.get("name"), b.get("namespace") or namespace, b.get("port")) for b in rule.get("backendRefs") or []]
        for match in rule.get("matches") or []:
            path = match.get("path") or {}
            if path.get("type") != "PathPrefix":
                continue
            for host in spec.get("hostnames") or []:
                for name, ns, port in backends:
                    claims.append((host, path.get("value"), "%s.%s.svc.cluster.local" % (name, ns), port))
    return claims


def _mesh_claims(virtualservices):
    """{(host, prefix): (destination host, port, VirtualService)} of the VirtualServices bound to `mesh`."""
    claims = {}
    for vs in virtualservices:
        spec = vs.get("spec") or {}
        if "mesh" not in (spec.get("gateways") or ["mesh"]):
            continue
        for route in spec.get("http") or []:
            destinations = [(r.get("destination") or {}) for r in route.get("route") or []]
            for match in route.get("match") or []:
                uri = match.get("uri") or {}
                prefix = uri.get("prefix")
                if prefix is None:
                    continue
                for host in spec.get("hosts") or []:
                    for dest in destinations:
                        claims[(host, prefix.rstrip("/") or "/")] = (
                            dest.get("host"), (dest.get("port") or {}).get("number"), vs)
    return claims


def _made_for(obj, gateway):
    """Whether `obj` was made for the Gateway `gateway` ({name, namespace}); any object when None, and an
    object without the Gateway labels (not made by expose_app) as well."""
    labels = _meta(obj).get("labels") or {}
    if gateway is None or GATEWAY_LABEL not in labels:
        return True
    return (labels.get(GATEWAY_LABEL), labels.get(GATEWAY_NAMESPACE_LABEL)) == (gateway["name"], gateway["namespace"])


def _route_findings(observed, expected):
    findings = []
    gateway = expected.get("gateway")
    # Another Gateway's routes are neither this Gateway's apps nor judged against its VirtualServices.
    routes = [r for r in observed.get("httproutes") or [] if _made_for(r, gateway)]
    by_app = {}
    for route in routes:
        app = (_meta(route).get("labels") or {}).get(APP_LABEL)
        by_app.setdefault((app, _meta(route).get("namespace")), []).append(route)
    for app in expected.get("apps") or []:
        if (app["name"], app["namespace"]) not in by_app:
            findings.append("app %s has no HTTPRoute in namespace %s: run the expose_app role"
                            % (app["name"], app["namespace"]))
    if _ambient(expected):
        return findings + _ambient_virtualservice_findings(observed, routes, gateway)
    if expected.get("routing") != "virtualservice":
        return findings
    mesh = _mesh_claims([vs for vs in observed.get("virtualservices") or [] if _made_for(vs, gateway)])
    edge = set()
    for route in routes:
        for host, prefix, fqdn, port in _route_claims(route):
            key = (host, (prefix or "/").rstrip("/") or "/")
            edge.add(key)
            if key not in mesh:
                findings.append("%s routes %s%s at the edge but no VirtualService bound to mesh matches that host and "
                                "prefix, so the Envoy sidecar passes it through unrouted: run the expose_app role"
                                % (_where(route), host, prefix))
                continue
            dest, dest_port, vs = mesh[key]
            if (dest, dest_port) != (fqdn, port):
                findings.append("%s sends %s%s to %s:%s but %s sends it to %s:%s: the two layers disagree; run the "
                                "expose_app role" % (_where(route), host, prefix, fqdn, port, _where(vs), dest, dest_port))
    for (host, prefix), (_dest, _dest_port, vs) in sorted(mesh.items(), key=lambda item: item[0]):
        if (host, prefix) not in edge:
            findings.append("%s matches %s%s but no managed HTTPRoute routes it at the edge: remove it or declare the "
                            "app in expose_app_apps" % (_where(vs), host, prefix))
    return findings


def _ambient_virtualservice_findings(observed, routes, gateway):
    """Ambient has no mesh VirtualService for the apps: one made for this Gateway, or one bound to `mesh` for a
    host the Gateway's routes serve, would apply only to sidecars (ztunnel does not read them)."""
    hosts = set(host for route in routes for host in (route.get("spec") or {}).get("hostnames") or [])
    findings = []
    for vs in observed.get("virtualservices") or []:
        labels = _meta(vs).get("labels") or {}
        spec = vs.get("spec") or {}
        ours = GATEWAY_LABEL in labels and _made_for(vs, gateway)
        for_apps = "mesh" in (spec.get("gateways") or ["mesh"]) and hosts & set(spec.get("hosts") or [])
        if ours or for_apps:
            findings.append("%s is a mesh VirtualService for the apps, which ambient mode does not use: run the "
                            "expose_app role in ambient mode (it removes those it made), or delete it"
                            % _where(dict(vs, kind="VirtualService")))
    return findings


def _ambient_findings(observed, expected):
    """The ambient state: the namespaces enrolled and not for injection, no sidecar in any of their pods,
    every running pod enrolled, the ztunnel and istio-cni DaemonSets present."""
    findings = []
    namespaces = observed.get("ambient_namespaces") or {}
    teg = expected["teg_namespace"]
    for name in sorted(namespaces):
        labels = namespaces[name]
        if labels is None:
            continue
        fixer = "teg_istio_prep" if name == teg else "expose_app"
        if name in (expected.get("ambient_labelled") or []) and labels.get(DATAPLANE_MODE_LABEL) != DATAPLANE_MODE_AMBIENT:
            findings.append("Namespace %s has label %s=%r, expected %r: run the %s role in ambient mode"
                            % (name, DATAPLANE_MODE_LABEL, labels.get(DATAPLANE_MODE_LABEL), DATAPLANE_MODE_AMBIENT,
                               fixer))
        # istiod injects sidecars by these, and ztunnel does not capture a pod with a sidecar.
        for key in INJECTION_LABELS:
            if key in labels:
                findings.append("Namespace %s has the sidecar injection label %s=%s, which ambient mode must not have "
                                "(a pod with a sidecar is not captured by ztunnel): run the %s role in ambient mode, "
                                "or remove the label" % (name, key, labels[key], fixer))
    for pod in observed.get("ambient_pods") or []:
        if not pod_serving(pod):
            continue
        namespace = _meta(pod).get("namespace")
        where = _where(dict(pod, kind="Pod"))
        if sidecar_container(pod) is not None:
            findings.append("%s has an istio-proxy sidecar, which ambient mode does without: run the teg_restart "
                            "role in ambient mode (or a rollout restart) once its namespace has no injection label"
                            % where)
        elif not ambient_enrolled(pod, namespaces.get(namespace) or {}):
            findings.append("%s is not enrolled in the ambient mesh: label Namespace %s %s=%s (the teg_istio_prep "
                            "and expose_app roles do), and drop the pod's own %s=none"
                            % (where, namespace, DATAPLANE_MODE_LABEL, DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_LABEL))
    daemonsets = observed.get("daemonsets") or {}
    for name in AMBIENT_DAEMONSETS:
        if not daemonsets.get(name):
            findings.append("DaemonSet %s/%s, part of Istio's ambient data plane, does not exist: run the "
                            "istio_install role in ambient mode" % (expected.get("istio_namespace"), name))
    return findings


def _mtls_findings(observed, expected):
    wanted = expected.get("peerauthentication")
    if not wanted:
        return []
    # The mesh-wide policy Istio honours (the oldest selector-less one in the root namespace, whatever its name).
    policy = observed.get("peerauthentication")
    if not policy:
        missing = describe("PeerAuthentication", "default", wanted["namespace"])
        return ["%s does not exist: run the strict_mtls role" % missing]
    where = describe("PeerAuthentication", _meta(policy).get("name"), wanted["namespace"])
    mode = ((policy.get("spec") or {}).get("mtls") or {}).get("mode")
    if mode != wanted["mode"]:
        return ["%s has mode %r, expected %r: run the strict_mtls role" % (where, mode, wanted["mode"])]
    exceptions = permissive_exceptions(observed.get("peerauthentications"), wanted.get("namespaces"),
                                       wanted["namespace"], wanted.get("exceptions")) if mode == "STRICT" else []
    return [exceptions_line(exceptions)] if exceptions else []


def verify_config_findings(observed, expected):
    """Every problem found at the `config` level, one line each; [] when all is in place."""
    return (_prep_findings(observed, expected) + _job_sidecar_findings(observed)
            + (_ambient_findings(observed, expected) if _ambient(expected) else [])
            + _route_findings(observed, expected) + _mtls_findings(observed, expected))


def _job_sidecar_findings(observed):
    """Unfinished Job pods in TEG's namespace with istio-proxy as an ordinary container. Step 1 labels that
    namespace for injection, so the certgen Job that TEG's chart runs as a pre-install/pre-upgrade hook gets
    a sidecar; a Job completes only when all its containers have exited, and istio-proxy does not, so the Job
    and the `helm upgrade` waiting on its hook hang (shown with the real istiod in
    tests/integration_real/test_certgen_job.py). A native sidecar (an init container) does not hold it."""
    findings = []
    for pod in observed.get("teg_pods") or []:
        jobs = [o.get("name") for o in _meta(pod).get("ownerReferences") or [] if o.get("kind") == "Job"]
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        if not jobs or "istio-proxy" not in containers or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        findings.append("%s of Job %s has an istio-proxy sidecar that never exits, so the Job never completes (a TEG "
                        "install or upgrade waits on its certgen hook): set TEG's Helm value certgen.job.pod.labels "
                        "to {sidecar.istio.io/inject: 'false'}, then delete the Job" % (_where(dict(pod, kind="Pod")), jobs[0]))
    return findings


def _condition(obj, kind):
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def verify_status_findings(observed, expected):
    """Problems at the `status` level: what the controllers report, and which pods lack sidecars."""
    findings = []
    gc = observed.get("gatewayclass_object")
    accepted = _condition(gc, "Accepted")
    if not accepted or accepted.get("status") != "True":
        findings.append("GatewayClass %s is not Accepted (%s): check the Envoy Gateway controller logs and the "
                        "EnvoyProxy it references" % (expected["gatewayclass"], (accepted or {}).get("reason", "no status")))
    for gateway in observed.get("gateways") or []:
        if not _made_for(gateway, expected.get("gateway")):
            continue
        programmed = _condition(gateway, "Programmed")
        if not programmed or programmed.get("status") != "True":
            findings.append("%s is not Programmed (%s)" % (_where(gateway), (programmed or {}).get("reason", "no status")))
    for route in observed.get("httproutes") or []:
        if not _made_for(route, expected.get("gateway")):
            continue
        parents = ((route.get("status") or {}).get("parents")) or []
        for kind in ("Accepted", "ResolvedRefs"):
            ok = any(c.get("type") == kind and c.get("status") == "True"
                     for p in parents for c in p.get("conditions") or [])
            if not ok:
                findings.append("%s is not %s by its Gateway" % (_where(route), kind))
    # In ambient the config level checks every pod's enrolment (_ambient_findings).
    missing = sorted(_where(p) for p in observed.get("mesh_pods") or []
                     if pod_serving(p) and sidecar_container(p) is None and not _ambient(expected))
    if missing:
        findings.append("pods without an istio-proxy sidecar: %s; run the teg_restart role (and check the "
                        "namespace's injection label)" % ", ".join(missing))
    return findings


# The checks that verify reports one by one (`verify: <cluster>: P/T checks passed`, AWX artifacts, JUnit): a name
# and the rule above that is that check, in the order verify_config_findings runs them, then the status level's.
# Together their findings are verify_config_findings' (and verify_status_findings'): tests/unit/.../test_verify.py
# holds them to that, so a rule added to verify_config_findings without a row here fails there.
_CONFIG_CHECKS = (
    ("TEG prepared for the mesh", _prep_findings, None),
    ("no sidecar holding TEG's certgen Job", lambda observed, expected: _job_sidecar_findings(observed), None),
    ("ambient data plane and enrolment", _ambient_findings, _ambient),
    ("edge and mesh routes agree", _route_findings, None),
    ("mesh-wide mTLS mode", _mtls_findings, lambda expected: bool(expected.get("peerauthentication"))),
)
_STATUS_CHECKS = (
    ("controllers report the routes programmed, pods have sidecars", verify_status_findings, None),
)


def verify_checks(observed, expected, level="config"):
    """[{"name", "findings"}] of every check that applies, in order: a check passes when its findings are []."""
    rows = _CONFIG_CHECKS + (_STATUS_CHECKS if level == "status" else ())
    return [{"name": name, "findings": rule(observed, expected)}
            for name, rule, applies in rows if applies is None or applies(expected)]
