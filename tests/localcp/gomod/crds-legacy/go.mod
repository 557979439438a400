module teg-istio-localcp/crds-legacy

go 1.26.0

require (
	istio.io/api v1.19.9
	sigs.k8s.io/gateway-api v0.7.1
)
