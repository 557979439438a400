# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module mesh_verify, run in-process by its action plugin or as a module
process (module_utils/_k8s_module.py). It can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.teg.istio.plugins.module_utils._strict_mtls.policies import declared_keys, honoured
from ansible_collections.teg.istio.plugins.module_utils.cluster import TegIstioError, api_errors, connect, get_or_none
from ansible_collections.teg.istio.plugins.module_utils.names import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    describe,
    referenced_envoyproxy,
)
from ansible_collections.teg.istio.plugins.module_utils.facts import gather
from ansible_collections.teg.istio.plugins.module_utils.verify import (
    AMBIENT_DAEMONSETS,
    verify_config_findings,
    verify_status_findings,
)

_MANAGED = "%s=%s" % (MANAGED_BY_LABEL, MANAGED_BY_VALUE)

ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(
    level=dict(type="str", choices=["config", "status"], default="config"),
    teg_namespace=dict(type="str", default="envoy-gateway-system"),
    revision=dict(type="str", default=""),
    service=dict(type="str", default="envoy-gateway"),
    service_port=dict(type="int", default=18000),
    app_protocol=dict(type="str", default="tls"),
    ratelimit_service=dict(type="str", default="envoy-ratelimit"),
    ratelimit_service_port=dict(type="int", default=8081),
    gatewayclass=dict(type="str", default="teg"),
    pod_annotations=dict(type="dict", default={"traffic.sidecar.istio.io/includeInboundPorts": ""}),
    apps=dict(type="list", elements="dict", default=[]),
    routing=dict(type="str", choices=["virtualservice", "service"], default="virtualservice"),
    virtualservice_namespace=dict(type="str", default="envoy-gateway-system"),
    gateway_name=dict(type="str", default="apps"),
    gateway_namespace=dict(type="str", default="envoy-gateway-system"),
    mtls_mode=dict(type="str", default="STRICT"),
    mtls_root_namespace=dict(type="str", default="istio-system"),
    mesh_namespaces=dict(type="list", elements="str", default=[]),
    mtls_exceptions=dict(type="list", elements="dict", default=[]),
    fail_on_findings=dict(type="bool", default=True),
    mesh_mode=dict(type="str", choices=["sidecar", "ambient"], default="sidecar"),
    istio_namespace=dict(type="str", default="istio-system"),
)
ARGUMENT_CONSTRAINTS = {}


def _list(client, api_version, kind, namespace=None, label_selector=None):
    if not api_version:
        return []
    where = "%s in %s" % (kind, "namespace %s" % namespace if namespace else "all namespaces")
    with api_errors("list", where):
        resource = client.resource(kind, api_version)
        return client.get(resource, namespace=namespace, label_selector=label_selector).to_dict().get("items") or []


def _get(client, api_version, kind, name, namespace=None):
    if not api_version or not name:
        return None
    with api_errors("read", describe(kind, name, namespace)):
        return get_or_none(client, api_version, kind, name, namespace)


def _observe(client, params, facts):
    # An unset namespace of the reference is "default", as everywhere in the collection (names.py).
    ref = referenced_envoyproxy((facts.get("gatewayclass") or {}).get("parameters_ref")) or {}
    gateway_api = (facts.get("gateway_api") or {}).get("api_version")
    istio = facts.get("istio") or {}
    observed = {
        "teg_namespace": _get(client, "v1", "Namespace", params["teg_namespace"]),
        "service": _get(client, "v1", "Service", params["service"], params["teg_namespace"]),
        "ratelimit_service": (_get(client, "v1", "Service", params["ratelimit_service"], params["teg_namespace"])
                              if params["ratelimit_service"] else None),
        "gatewayclass": facts.get("gatewayclass"),
        # Job pods in TEG's namespace (its chart's certgen hook), whose sidecar would keep the Job running.
        "teg_pods": _list(client, "v1", "Pod", params["teg_namespace"]),
        "envoyproxy": _get(client, (facts.get("envoyproxy") or {}).get("api_version"), "EnvoyProxy",
                           ref.get("name"), ref.get("namespace")),
        "httproutes": _list(client, gateway_api, "HTTPRoute", label_selector=_MANAGED),
        "virtualservices": _list(client, istio.get("virtualservice_api_version"), "VirtualService",
                                 params["virtualservice_namespace"]),
    }
    if params["mtls_mode"]:
        # Every policy, in one list: the mesh-wide one Istio honours may have another name than `default`, and the
        # narrower ones of TEG's and the apps' namespaces decide whether STRICT reaches their traffic.
        policies = _list(client, istio.get("peerauthentication_api_version"), "PeerAuthentication")
        observed["peerauthentication"] = honoured(policies, params["mtls_root_namespace"])
        observed["peerauthentications"] = policies
    if params["mesh_mode"] == "ambient":
        observed.update(_observe_ambient(client, params))
    if params["level"] == "status":
        observed["gatewayclass_object"] = _get(client, gateway_api, "GatewayClass", params["gatewayclass"])
        observed["gateways"] = _list(client, gateway_api, "Gateway", label_selector=_MANAGED)
        observed["mesh_pods"] = [pod for ns in params["mesh_namespaces"] for pod in _list(client, "v1", "Pod", ns)]
    return observed


def _ambient_namespaces(params):
    """TEG's namespace, the mesh namespaces and the apps' namespaces."""
    return sorted(set([params["teg_namespace"]] + list(params["mesh_namespaces"])
                      + [a.get("namespace") for a in params["apps"] if a.get("namespace")]))


def _observe_ambient(client, params):
    """The namespaces' labels (None: not there) and pods of TEG's, the apps' and the mesh namespaces, and the
    ambient data plane's DaemonSets."""
    namespaces, pods = {}, []
    for name in _ambient_namespaces(params):
        namespace = _get(client, "v1", "Namespace", name)
        namespaces[name] = ((namespace or {}).get("metadata") or {}).get("labels") or {} if namespace else None
        if namespace:
            pods.extend(_list(client, "v1", "Pod", name))
    daemonsets = dict((name, _get(client, "apps/v1", "DaemonSet", name, params["istio_namespace"]))
                      for name in AMBIENT_DAEMONSETS)
    return {"ambient_namespaces": namespaces, "ambient_pods": pods, "daemonsets": daemonsets}


def _expected(params):
    return {
        "teg_namespace": params["teg_namespace"],
        "injection_labels": {"istio.io/rev": params["revision"]} if params["revision"] else {"istio-injection": "enabled"},
        "service": params["service"],
        "service_port": params["service_port"],
        "app_protocol": params["app_protocol"],
        "ratelimit_service": params["ratelimit_service"],
        "ratelimit_service_port": params["ratelimit_service_port"],
        "gatewayclass": params["gatewayclass"],
        "pod_annotations": params["pod_annotations"],
        "apps": [{"name": a.get("name"), "namespace": a.get("namespace")} for a in params["apps"]],
        "routing": params["routing"],
        "gateway": {"name": params["gateway_name"], "namespace": params["gateway_namespace"]},
        "mesh_mode": params["mesh_mode"],
        "istio_namespace": params["istio_namespace"],
        # The namespaces the roles label for ambient: TEG's (teg_istio_prep) and the apps' (expose_app).
        "ambient_labelled": sorted(set([params["teg_namespace"]]
                                       + [a.get("namespace") for a in params["apps"] if a.get("namespace")])),
        "peerauthentication": ({"namespace": params["mtls_root_namespace"], "mode": params["mtls_mode"],
                                # Where STRICT must reach: TEG's, the mesh's and the apps' namespaces.
                                "namespaces": _ambient_namespaces(params),
                                "exceptions": declared_keys(params["mtls_exceptions"])}
                               if params["mtls_mode"] else None),
    }


def run(module):
    params = module.params
    client = connect(module)
    facts = gather(client, gatewayclass=params["gatewayclass"])
    observed = _observe(client, params, facts)
    expected = _expected(params)
    findings = verify_config_findings(observed, expected)
    if params["level"] == "status":
        findings += verify_status_findings(observed, expected)
    checked = {"level": params["level"], "httproutes": len(observed["httproutes"]),
               "virtualservices": len(observed["virtualservices"]), "apps": len(expected["apps"])}
    result = {"changed": False, "findings": findings, "checked": checked}
    if findings and params["fail_on_findings"]:
        raise TegIstioError("%d problem(s): %s" % (len(findings), " | ".join(findings)), result)
    return result
