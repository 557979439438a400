#!/usr/bin/env bash
# The manual baseline of `make bench`: the TEG how-to as a platform engineer types it, kubectl and
# helm only, making the same objects site.yml makes on the same flavour (in the current flavour TEG's
# GatewayClass already references EnvoyProxy teg-envoy-proxy, so the annotation goes there, as
# teg_istio_prep's `auto` mode does). Needs KUBECONFIG, PATH and TEG_ISTIO_TEST_CHARTS from
# `localcp.py env`, and MATRIX.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
ns=envoy-gateway-system
if [ "${MATRIX:-current}" = legacy ]; then
  ep_api=config.gateway.envoyproxy.io/v1alpha1 gw_api=gateway.networking.k8s.io/v1beta1
  vs_api=networking.istio.io/v1beta1 pa_api=security.istio.io/v1beta1
else
  ep_api=gateway.envoyproxy.io/v1alpha1 gw_api=gateway.networking.k8s.io/v1
  vs_api=networking.istio.io/v1 pa_api=security.istio.io/v1
fi
version=$TEG_ISTIO_TEST_ISTIO_VERSION

# 1. Prepare TEG
kubectl label namespace $ns --overwrite=true istio-injection=enabled
kubectl patch service -n $ns envoy-gateway --type strategic -p '{"spec":{"ports":[{"port":18000,"appProtocol":"tls"}]}}'
annotations='{"traffic.sidecar.istio.io/includeInboundPorts":""}'
if [ "${MATRIX:-current}" = legacy ]; then
  kubectl apply -f - <<YAML
apiVersion: $ep_api
kind: EnvoyProxy
metadata: {name: data-plane-sidecars, namespace: $ns}
spec: {provider: {type: Kubernetes, kubernetes: {envoyDeployment: {pod: {annotations: $annotations}}}}}
YAML
  kubectl patch gatewayclass teg --type merge -p \
    "{\"spec\":{\"parametersRef\":{\"group\":\"${ep_api%/*}\",\"kind\":\"EnvoyProxy\",\"name\":\"data-plane-sidecars\",\"namespace\":\"$ns\"}}}"
else
  kubectl patch envoyproxy.${ep_api%/*} teg-envoy-proxy -n $ns --type merge -p \
    "{\"spec\":{\"provider\":{\"kubernetes\":{\"envoyDeployment\":{\"pod\":{\"annotations\":$annotations}}}}}}"
fi

# 2. Install Istio, control plane only
helm install istio-base "$TEG_ISTIO_TEST_CHARTS/base-$version.tgz" -n istio-system --create-namespace --wait
helm install istiod "$TEG_ISTIO_TEST_CHARTS/istiod-$version.tgz" -n istio-system --wait \
  --set meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY

# 3. Restart the TEG control plane
deployments="envoy-gateway envoy-ratelimit teg-envoy-gateway teg-redis"
# shellcheck disable=SC2086
kubectl rollout restart deployment -n $ns $deployments
for d in $deployments; do kubectl rollout status "deployment/$d" -n $ns --timeout=300s; done

# 4. The app, the Gateway and the HTTPRoute
kubectl create namespace httpbin
kubectl label namespace httpbin istio-injection=enabled
kubectl apply -n httpbin -f "$repo/roles/expose_app/files/httpbin.yaml"
kubectl apply -f - <<YAML
apiVersion: $gw_api
kind: Gateway
metadata: {name: apps, namespace: $ns}
spec:
  gatewayClassName: teg
  listeners:
    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: $gw_api
kind: HTTPRoute
metadata: {name: httpbin, namespace: httpbin}
spec:
  parentRefs: [{name: apps, namespace: $ns}]
  hostnames: [www.example.com]
  rules:
    - matches: [{path: {type: PathPrefix, value: /httpbin/}}]
      backendRefs: [{name: httpbin, port: 8000}]
YAML

# 5. The VirtualService the sidecars route by
kubectl apply -f - <<YAML
apiVersion: $vs_api
kind: VirtualService
metadata: {name: httpbin, namespace: $ns}
spec:
  hosts: [www.example.com]
  gateways: [mesh]
  http:
    - match: [{uri: {prefix: /httpbin/}}]
      rewrite: {uri: /}
      route: [{destination: {host: httpbin.httpbin.svc.cluster.local, port: {number: 8000}}}]
YAML

# 6. STRICT mTLS
kubectl apply -f - <<YAML
apiVersion: $pa_api
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
YAML
