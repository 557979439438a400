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
        EnvoyProxy the GatewayClass references and its pod annotations (a reference without a namespace
        meaning C(default), as Envoy Gateway reads it), that each declared app has its HTTPRoute made for
        O(gateway_name), that the managed HTTPRoutes and the VirtualServices bound to C(mesh) agree on host,
        prefix and destination, the mode of the mesh-wide PeerAuthentication (the oldest without selector in
        the mesh root namespace, as Istio picks it, whatever its name), that no namespace-wide, workload or
        port-level PeerAuthentication in O(teg_namespace), O(mesh_namespaces) or the apps' namespaces keeps
        traffic PERMISSIVE or DISABLE under a mesh-wide STRICT (but those of O(mtls_exceptions)), and
        that no unfinished Job pod in O(teg_namespace) has C(istio-proxy) as an ordinary container (the
        certgen hook of TEG's chart, which such a sidecar keeps from completing).
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
  gateway_name:
    description:
      - The Gateway the apps are exposed on (C(expose_app_gateway_name)). Only the HTTPRoutes, VirtualServices
        and Gateways made for it are checked, so that another Gateway's routes are neither taken for this one's
        apps nor judged against its VirtualServices.
    type: str
    default: apps
    version_added: 0.2.0
  gateway_namespace:
    description: The namespace of O(gateway_name).
    type: str
    default: envoy-gateway-system
    version_added: 0.2.0
  mtls_mode:
    description:
      - The mode the mesh-wide PeerAuthentication in O(mtls_root_namespace) must have; empty skips the mTLS checks.
      - With V(STRICT), a namespace-wide, workload or port-level policy that keeps some traffic of TEG's, the mesh's
        or the apps' namespaces PERMISSIVE or DISABLE is a finding naming it.
    type: str
    default: STRICT
  mtls_exceptions:
    description:
      - The PeerAuthentications declared as intended exceptions to a mesh-wide STRICT (C(namespace) and C(name),
        which defaults to C(default)), as in C(strict_mtls_namespace_policies); they are not findings.
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
  mtls_root_namespace:
    description: The mesh root namespace.
    type: str
    default: istio-system
  mesh_namespaces:
    description:
      - With O(level=status), the namespaces whose pods must all carry a sidecar.
      - With O(mesh_mode=ambient) (any level), namespaces whose running pods must all be enrolled in the ambient mesh
        (label C(istio.io/dataplane-mode=ambient) on the pod or its namespace) and carry no sidecar, beside TEG's
        namespace and the apps' namespaces, which are always checked in ambient.
    type: list
    elements: str
    default: []
  fail_on_findings:
    description: Fail when a problem is found. With C(false) the findings are only returned.
    type: bool
    default: true
  mesh_mode:
    description:
      - C(sidecar) checks the sidecar procedure's state. C(ambient) checks Istio's ambient mode instead, at the
        C(config) level already, TEG's namespace labelled C(istio.io/dataplane-mode=ambient) and with no injection
        label (C(istio-injection), C(istio.io/rev)), and the same for the apps' namespaces; no C(istio-proxy) sidecar
        in the pods of TEG's, the apps' and O(mesh_namespaces), each of them enrolled; the EnvoyProxy with
        C(routingType=Service), none of the sidecar pod annotations and C(ambient.istio.io/bypass-inbound-capture="true");
        no mesh VirtualService for the apps; the
        C(ztunnel) and C(istio-cni-node) DaemonSets in O(istio_namespace).
    type: str
    choices: [sidecar, ambient]
    default: sidecar
  istio_namespace:
    description: With O(mesh_mode=ambient), the namespace of Istio's C(ztunnel) and C(istio-cni-node) DaemonSets.
    type: str
    default: istio-system
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

from ansible_collections.teg.istio.plugins.module_utils._mesh_verify import ARGUMENT_CONSTRAINTS, ARGUMENT_SPEC, run
from ansible_collections.teg.istio.plugins.module_utils._k8s_module import run_as_module


def main():
    run_as_module(ARGUMENT_SPEC, run, ARGUMENT_CONSTRAINTS)


if __name__ == "__main__":
    main()
