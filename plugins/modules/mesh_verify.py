#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mesh_verify
short_description: Check that TEG is lifted into the Istio mesh and that its two routing layers agree
version_added: 0.1.0
description:
  - Reads, in one pass, what steps 1 to 6 of the procedure leave in a cluster and reports every problem
    as one line that names the object and the fix. Fails when there is any, unless O(fail_on_findings=false).
  - Level C(config) works on any cluster; level C(status) also needs the Envoy Gateway controller and
    istiod to run, since it reads what they report.
  - Writes nothing.
author:
  - teg.istio maintainers (@teg-istio)
options:
  level:
    description:
      - C(config) checks the TEG namespace's injection label, C(appProtocol) on the xDS Service port, the
        EnvoyProxy the GatewayClass references and its pod annotations, that each declared app has its
        HTTPRoute, that the managed HTTPRoutes and the VirtualServices bound to C(mesh) agree on host,
        prefix and destination, and the mode of PeerAuthentication C(default) in the mesh root namespace.
      - C(status) adds GatewayClass C(Accepted), Gateways C(Programmed), HTTPRoutes C(Accepted) and
        C(ResolvedRefs), and an C(istio-proxy) sidecar in every pod of O(mesh_namespaces).
    type: str
    choices: [config, status]
    default: config
  teg_namespace:
    description: Namespace of TEG's control plane.
    type: str
    default: envoy-gateway-system
  revision:
    description: Istio revision the TEG namespace selects (label C(istio.io/rev)); empty for C(istio-injection=enabled).
    type: str
    default: ""
  service:
    description: TEG's xDS Service.
    type: str
    default: envoy-gateway
  service_port:
    description: The xDS port of O(service).
    type: int
    default: 18000
  app_protocol:
    description: The C(appProtocol) expected on O(service_port) and O(ratelimit_service_port).
    type: str
    default: tls
  ratelimit_service:
    description:
      - Envoy Gateway's global rate-limit Service, in O(teg_namespace). When it exists, O(ratelimit_service_port)
        must carry O(app_protocol). It exists only while rate limiting is configured; an absent one is no finding.
      - Empty skips the check.
    type: str
    default: envoy-ratelimit
  ratelimit_service_port:
    description: The gRPC port of O(ratelimit_service).
    type: int
    default: 8081
  gatewayclass:
    description: The GatewayClass whose EnvoyProxy is checked.
    type: str
    default: teg
  pod_annotations:
    description: Annotations the EnvoyProxy must put on the Envoy pods, value for value (C("") is not unset).
    type: dict
    default: {"traffic.sidecar.istio.io/includeInboundPorts": ""}
  apps:
    description: The declared apps (C(name) and C(namespace) of each, as in the expose_app role).
    type: list
    elements: dict
    default: []
  routing:
    description: How the edge reaches the apps, as in the expose_app role.
    type: str
    choices: [virtualservice, service]
    default: virtualservice
  virtualservice_namespace:
    description: Where the mesh VirtualServices live.
    type: str
    default: envoy-gateway-system
  mtls_mode:
    description: The mode PeerAuthentication C(default) in O(mtls_root_namespace) must have; empty skips the check.
    type: str
    default: STRICT
  mtls_root_namespace:
    description: The mesh root namespace.
    type: str
    default: istio-system
  mesh_namespaces:
    description: With O(level=status), the namespaces whose pods must all carry a sidecar.
    type: list
    elements: str
    default: []
  fail_on_findings:
    description: Fail when a problem is found. With C(false) the findings are only returned.
    type: bool
    default: true
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: full
    details: Only reads, so it runs the same way in check mode.
  diff_mode:
    support: none
    details: Changes nothing.
  idempotent:
    support: full
    details: Only reads.
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Check the configuration that site.yml applied
  teg.istio.mesh_verify:
    apps:
      - {name: httpbin, namespace: httpbin}

- name: On a cluster where Envoy Gateway and istiod run, also check their status and the sidecars
  teg.istio.mesh_verify:
    level: status
    mesh_namespaces: [envoy-gateway-system, httpbin]
"""

RETURN = r"""
findings:
  description: One line per problem; empty when everything is in place.
  returned: always
  type: list
  elements: str
  sample: ["Service envoy-gateway-system/envoy-gateway port 18000 has appProtocol None, expected 'tls': run the teg_istio_prep role"]
checked:
  description: What was read, to show the scope of the check.
  returned: success
  type: dict
  sample: {"httproutes": 1, "virtualservices": 1, "level": "config"}
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
from ansible_collections.teg.istio.plugins.module_utils.facts import gather
from ansible_collections.teg.istio.plugins.module_utils.verify import (
    verify_config_findings,
    verify_status_findings,
)

_MANAGED = "%s=%s" % (MANAGED_BY_LABEL, MANAGED_BY_VALUE)


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
    ref = (facts.get("gatewayclass") or {}).get("parameters_ref") or {}
    gateway_api = (facts.get("gateway_api") or {}).get("api_version")
    istio = facts.get("istio") or {}
    observed = {
        "teg_namespace": _get(client, "v1", "Namespace", params["teg_namespace"]),
        "service": _get(client, "v1", "Service", params["service"], params["teg_namespace"]),
        "ratelimit_service": (_get(client, "v1", "Service", params["ratelimit_service"], params["teg_namespace"])
                              if params["ratelimit_service"] else None),
        "gatewayclass": facts.get("gatewayclass"),
        "envoyproxy": _get(client, (facts.get("envoyproxy") or {}).get("api_version"), "EnvoyProxy",
                           ref.get("name"), ref.get("namespace")),
        "httproutes": _list(client, gateway_api, "HTTPRoute", label_selector=_MANAGED),
        "virtualservices": _list(client, istio.get("virtualservice_api_version"), "VirtualService",
                                 params["virtualservice_namespace"]),
        "peerauthentication": _get(client, istio.get("peerauthentication_api_version"), "PeerAuthentication",
                                   "default", params["mtls_root_namespace"]) if params["mtls_mode"] else None,
    }
    if params["level"] == "status":
        observed["gatewayclass_object"] = _get(client, gateway_api, "GatewayClass", params["gatewayclass"])
        observed["gateways"] = _list(client, gateway_api, "Gateway", label_selector=_MANAGED)
        observed["mesh_pods"] = [pod for ns in params["mesh_namespaces"] for pod in _list(client, "v1", "Pod", ns)]
    return observed


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
        "peerauthentication": ({"namespace": params["mtls_root_namespace"], "mode": params["mtls_mode"]}
                               if params["mtls_mode"] else None),
    }


def run(module):
    params = module.params
    client = get_api_client(module)
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
        module.fail_json(msg="%d problem(s): %s" % (len(findings), " | ".join(findings)), **result)
    module.exit_json(**result)


def main():
    argument_spec = copy.deepcopy(AUTH_ARG_SPEC)
    argument_spec.update(
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
        mtls_mode=dict(type="str", default="STRICT"),
        mtls_root_namespace=dict(type="str", default="istio-system"),
        mesh_namespaces=dict(type="list", elements="str", default=[]),
        fail_on_findings=dict(type="bool", default=True),
    )
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argument_spec, supports_check_mode=True)
    try:
        run(module)
    except TegIstioError as exc:
        module.fail_json(msg=str(exc))
    except CoreException as exc:
        module.fail_from_exception(exc)


if __name__ == "__main__":
    main()
