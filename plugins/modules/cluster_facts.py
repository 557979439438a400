#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_facts
short_description: Read once what a cluster serves for lifting TEG into Istio
version_added: 0.1.0
description:
  - Reads, without changing anything, what the roles of this collection need to know about a cluster
    before they write. The Kubernetes version; which API group and version serve C(EnvoyProxy)
    (C(gateway.envoyproxy.io) from Envoy Gateway v0.6, C(config.gateway.envoyproxy.io) up to v0.5) and
    which fields its schema has; the Gateway API version to use; the Istio API versions and the
    running istiod.
  - Discovery uses raw requests to the API server rather than the client's discovery cache, so CRDs
    installed by an earlier task of the same play are seen.
  - Schema features come from the C(openAPIV3Schema) of the served version of the CRD
    C(envoyproxies.<group>), so reading that CustomResourceDefinition needs C(get) on
    C(customresourcedefinitions).
  - istiod is found as the Deployment labelled C(app=istiod) (what Istio's C(istiod) chart creates),
    in any namespace. When several revisions run, the C(default) revision is reported, else the first
    by namespace and name.
author:
  - teg.istio maintainers (@teg-istio)
options:
  gatewayclass:
    description:
      - Name of a GatewayClass to describe. When given, the result has C(gatewayclass), which is
        C(null) when the GatewayClass (or the Gateway API) does not exist.
    type: str
  namespace:
    description:
      - Name of a namespace to look for. When given, the result has C(namespace_exists).
      - The namespace of the Helm releases in O(helm_releases).
    type: str
  helm_releases:
    description:
      - Names of Helm releases in O(namespace) to read, without running helm, from the Secrets in which
        Helm 3 keeps them (its default storage driver; releases stored with C(HELM_DRIVER=configmap) or
        C(sql) are not seen). The result RV(helm_releases) has their newest revisions.
      - Needs C(list) on C(secrets) in O(namespace).
    type: list
    elements: str
    default: []
  objects:
    description:
      - Objects to read in the same process, so that a role reads everything it checks in one task.
      - Each item names one object (O(objects[].name)) or a list (no name, optionally
        O(objects[].label_selectors)), in O(objects[].namespace) or, for a list without it, in all
        namespaces.
      - The result RV(objects) has one entry per item, in the same order.
    type: list
    elements: dict
    default: []
    suboptions:
      kind:
        description: The kind, for example C(Service) or C(EnvoyProxy).
        type: str
        required: true
      api_version:
        description:
          - Its group and version. May be left out for C(EnvoyProxy), C(GatewayClass), C(Gateway),
            C(HTTPRoute), C(VirtualService) and C(PeerAuthentication), whose served version is then
            used (these differ between Envoy Gateway and Istio releases).
        type: str
      name:
        description: The object's name; leave out to list.
        type: str
      namespace:
        description: Its namespace; leave out for cluster-scoped kinds, or to list in all namespaces.
        type: str
      label_selectors:
        description: Label selectors a listed object must match, as for M(kubernetes.core.k8s_info).
        type: list
        elements: str
        default: []
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: full
    details: Only reads, so it runs the same way in check mode.
  diff_mode:
    support: none
    details: Changes nothing, so it has nothing to diff.
  idempotent:
    support: full
    details: Only reads.
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Read what the cluster serves and how GatewayClass teg is set up
  teg.istio.cluster_facts:
    gatewayclass: teg
    namespace: envoy-gateway-system
  register: __facts

- name: Stop when Envoy Gateway is too old for pod annotations on the Envoy pods
  ansible.builtin.assert:
    that: __facts.cluster.envoyproxy.pod_annotations
    fail_msg: Envoy Gateway older than v0.4 has no EnvoyProxy pod annotations
"""

RETURN = r"""
cluster:
  description: What the cluster serves.
  returned: success
  type: dict
  contains:
    kubernetes_version:
      description: The API server's C(gitVersion).
      type: str
      sample: v1.34.4
    envoyproxy:
      description: The EnvoyProxy API, or C(null) when no API group serves C(envoyproxies).
      type: dict
      contains:
        api_version:
          description: Group and version that serve EnvoyProxy.
          type: str
          sample: gateway.envoyproxy.io/v1alpha1
        group:
          description: The API group.
          type: str
          sample: gateway.envoyproxy.io
        pod_annotations:
          description: The schema has C(spec.provider.kubernetes.envoyDeployment.pod.annotations) (Envoy Gateway v0.4 and later).
          type: bool
        routing_type:
          description: The schema has C(spec.routingType) (Envoy Gateway v1.1 and later).
          type: bool
        shutdown:
          description: The schema has C(spec.shutdown), the drain of the Envoy pods on shutdown (Envoy Gateway v1.0 and later).
          type: bool
    gateway_api:
      description: The Gateway API, or C(null) when C(gatewayclasses) is not served.
      type: dict
      contains:
        api_version:
          description: C(gateway.networking.k8s.io/v1) where served, else C(gateway.networking.k8s.io/v1beta1).
          type: str
          sample: gateway.networking.k8s.io/v1
    istio:
      description: Istio's APIs and control plane.
      type: dict
      contains:
        virtualservice_api_version:
          description: C(networking.istio.io/v1) where served (Istio 1.22 and later), else C(networking.istio.io/v1beta1), else C(null).
          type: str
          sample: networking.istio.io/v1
        peerauthentication_api_version:
          description: C(security.istio.io/v1) where served, else C(security.istio.io/v1beta1), else C(null).
          type: str
          sample: security.istio.io/v1
        istiod:
          description: The istiod Deployment, or C(null) when none is found.
          type: dict
          contains:
            namespace:
              description: Its namespace.
              type: str
              sample: istio-system
            name:
              description: Its name.
              type: str
              sample: istiod
            version:
              description: The tag of its first container's image, without a leading C(v); C(null) when the image has no tag.
              type: str
              sample: 1.31.4
            revision:
              description: Its C(istio.io/rev) label; C(default) when the label is absent.
              type: str
              sample: default
    gatewayclass:
      description: The GatewayClass named in O(gatewayclass), or C(null) when it does not exist.
      returned: when O(gatewayclass) is given
      type: dict
      contains:
        name:
          description: Its name.
          type: str
        controller_name:
          description: Its C(spec.controllerName).
          type: str
          sample: gateway.envoyproxy.io/gatewayclass-controller
        parameters_ref:
          description: Its C(spec.parametersRef) with the keys C(group), C(kind), C(name), C(namespace) (C(null) where unset), or C(null).
          type: dict
        envoyproxy:
          description:
            - The EnvoyProxy that C(parameters_ref) points at (an unset namespace meaning C(default)), or
              C(null) when the reference is not to an EnvoyProxy of the served group or it does not exist.
          type: dict
    namespace_exists:
      description: Whether the namespace named in O(namespace) exists.
      returned: when O(namespace) is given
      type: bool
helm_releases:
  description:
    - For each name in O(helm_releases), the newest revision of that release, in the shape of the
      C(status) that M(kubernetes.core.helm_info) returns; C(null) when the release does not exist.
    - Besides, C(labels) (the release's own labels, C(helm --labels)) and C(apply_method) (how Helm 4 applied it,
      C(ssa) or C(csa); C(null) for a release Helm 3 wrote).
  returned: success
  type: dict
  sample:
    istiod:
      name: istiod
      namespace: istio-system
      revision: "1"
      status: deployed
      chart: istiod-1.31.4
      app_version: 1.31.4
      updated: "2026-11-26T23:37:01.5Z"
      values: {global: {istioNamespace: istio-system}}
      labels: {app.kubernetes.io/managed-by: teg.istio}
      apply_method: ssa
objects:
  description: One entry per item of O(objects), in the same order.
  returned: success
  type: list
  elements: dict
  contains:
    api_version:
      description: The group and version read, C(null) when the cluster does not serve the kind.
      type: str
    resources:
      description: The objects found, as M(kubernetes.core.k8s_info) returns them; empty when none.
      type: list
      elements: dict
"""

from ansible_collections.teg.istio.plugins.module_utils._cluster_facts import ARGUMENT_CONSTRAINTS, ARGUMENT_SPEC, run
from ansible_collections.teg.istio.plugins.module_utils._k8s_module import run_as_module


def main():
    run_as_module(ARGUMENT_SPEC, run, ARGUMENT_CONSTRAINTS)


if __name__ == "__main__":
    main()
