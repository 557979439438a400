module teg-istio-localcp/crds

go 1.26.0

require (
	github.com/envoyproxy/gateway v1.9.0
	istio.io/api v1.31.4
)
