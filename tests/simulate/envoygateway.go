package simulate

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"sort"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"github.com/envoyproxy/gateway/internal/gatewayapi"
	"github.com/envoyproxy/gateway/internal/gatewayapi/resource"
	"github.com/envoyproxy/gateway/internal/infrastructure/kubernetes/proxy"
	"github.com/envoyproxy/gateway/internal/infrastructure/kubernetes/ratelimit"
	"github.com/envoyproxy/gateway/internal/ir"
	"github.com/envoyproxy/gateway/internal/logging"
	"github.com/envoyproxy/gateway/internal/xds/translator"
)

// TEGNamespace is where TEG (Envoy Gateway's control plane and its Envoy pods) runs.
const TEGNamespace = "envoy-gateway-system"

// EnvoyGatewayResult is what Envoy Gateway makes of the state: per Gateway (IR key), the xDS its Envoy
// pods get, and the Envoy Deployment and Service it would create; plus the routes' status.
type EnvoyGatewayResult struct {
	Config     *egv1a1.EnvoyGateway
	Gateways   map[string]*EnvoyGatewayProxy
	HTTPRoutes []*gwapiv1.HTTPRoute
	// TranslationErrors are what the controller would log; the IR is used all the same.
	TranslationErrors error
}

// EnvoyGatewayProxy is one Gateway's Envoy: its configuration and its Kubernetes objects.
type EnvoyGatewayProxy struct {
	Key        string
	Xds        *Config
	Infra      *ir.Infra
	Deployment *appsv1.Deployment
	Service    *corev1.Service
}

// envoyGatewayConfig is the EnvoyGateway configuration of the state, with the defaults the
// controller applies when it loads it.
func envoyGatewayConfig(st *State) (*egv1a1.EnvoyGateway, error) {
	eg := &egv1a1.EnvoyGateway{}
	if err := json.Unmarshal(st.EnvoyGateway, eg); err != nil {
		return nil, fmt.Errorf("envoy_gateway configuration: %w", err)
	}
	eg.SetEnvoyGatewayDefaults()
	return eg, nil
}

// envoyGatewayResources is what Envoy Gateway's Kubernetes provider hands its translator for the
// GatewayClass it controls: the class and its EnvoyProxy, the class's Gateways, the routes, and the
// Namespaces (with their labels: listeners select routes by them), Services and EndpointSlices.
func envoyGatewayResources(st *State, eg *egv1a1.EnvoyGateway, extra []*egv1a1.BackendTrafficPolicy) (*resource.Resources, error) {
	res := resource.NewResources()
	classes, err := Typed[gwapiv1.GatewayClass](st, "GatewayClass", "")
	if err != nil {
		return nil, err
	}
	for _, gc := range classes {
		if string(gc.Spec.ControllerName) == eg.Gateway.ControllerName {
			if res.GatewayClass != nil {
				return nil, fmt.Errorf("two GatewayClasses of controller %s; the suite models one", eg.Gateway.ControllerName)
			}
			res.GatewayClass = gc
		}
	}
	if res.GatewayClass == nil {
		return nil, fmt.Errorf("no GatewayClass of controller %s in the state", eg.Gateway.ControllerName)
	}
	res.EnvoyProxyDefaultSpec = eg.GetEnvoyProxyDefaultSpec()
	if ref := res.GatewayClass.Spec.ParametersRef; ref != nil && ref.Kind == "EnvoyProxy" {
		ns := "default"
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		ep, err := TypedOne[egv1a1.EnvoyProxy](st, "EnvoyProxy", ns, ref.Name)
		if err != nil {
			return nil, fmt.Errorf("GatewayClass %s parametersRef: %w", res.GatewayClass.Name, err)
		}
		res.EnvoyProxyForGatewayClass = ep
	}
	gateways, err := Typed[gwapiv1.Gateway](st, "Gateway", "")
	if err != nil {
		return nil, err
	}
	for _, gw := range gateways {
		if string(gw.Spec.GatewayClassName) == res.GatewayClass.Name {
			res.Gateways = append(res.Gateways, gw)
		}
	}
	if res.HTTPRoutes, err = Typed[gwapiv1.HTTPRoute](st, "HTTPRoute", ""); err != nil {
		return nil, err
	}
	if res.ReferenceGrants, err = Typed[gwapiv1b1.ReferenceGrant](st, "ReferenceGrant", ""); err != nil {
		return nil, err
	}
	if res.Namespaces, err = Typed[corev1.Namespace](st, "Namespace", ""); err != nil {
		return nil, err
	}
	if res.Services, err = Typed[corev1.Service](st, "Service", ""); err != nil {
		return nil, err
	}
	if res.EndpointSlices, err = Typed[discoveryv1.EndpointSlice](st, "EndpointSlice", ""); err != nil {
		return nil, err
	}
	if res.BackendTrafficPolicies, err = Typed[egv1a1.BackendTrafficPolicy](st, "BackendTrafficPolicy", ""); err != nil {
		return nil, err
	}
	res.BackendTrafficPolicies = append(res.BackendTrafficPolicies, extra...)
	secret, err := envoyClientSecret(st)
	if err != nil {
		return nil, err
	}
	res.Secrets = append(res.Secrets, secret)
	return res, nil
}

// envoyClientSecret is Secret `envoy` in the TEG namespace, which Envoy Gateway's certgen writes and
// the translator reads for Envoy's TLS to the rate limit service: the running controller's (live
// section of the state), or else a self-signed stand-in (the certificate does not decide any route).
func envoyClientSecret(st *State) (*corev1.Secret, error) {
	secret := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "envoy", Namespace: TEGNamespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{},
	}
	if st.Live != nil {
		for k, v := range st.Live.EnvoyClientTLS {
			raw, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("Secret envoy %s: %w", k, err)
			}
			secret.Data[k] = raw
		}
		return secret, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "envoy"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	secret.Data[corev1.TLSCertKey] = certPEM
	secret.Data[corev1.TLSPrivateKeyKey] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	secret.Data["ca.crt"] = certPEM
	return secret, nil
}

// TranslateEnvoyGateway runs Envoy Gateway's own translation, Gateway API to IR to xDS, with the
// settings its gateway-api and xds runners use (internal/gatewayapi/runner, internal/xds/runner), and
// renders each Gateway's Envoy Deployment and Service as its infrastructure manager does.
func TranslateEnvoyGateway(st *State, extra ...*egv1a1.BackendTrafficPolicy) (*EnvoyGatewayResult, error) {
	eg, err := envoyGatewayConfig(st)
	if err != nil {
		return nil, err
	}
	res, err := envoyGatewayResources(st, eg, extra)
	if err != nil {
		return nil, err
	}
	logger := logging.DefaultLogger(io.Discard, egv1a1.LogLevelInfo)
	t := &gatewayapi.Translator{
		GatewayControllerName:           eg.Gateway.ControllerName,
		GatewayClassName:                gwapiv1.ObjectName(res.GatewayClass.Name),
		GlobalRateLimitEnabled:          eg.RateLimit != nil,
		EnvoyPatchPolicyEnabled:         eg.ExtensionAPIs != nil && eg.ExtensionAPIs.EnableEnvoyPatchPolicy,
		BackendEnabled:                  eg.ExtensionAPIs != nil && eg.ExtensionAPIs.EnableBackend,
		SDSSecretRefEnabled:             eg.ExtensionAPIs != nil && eg.ExtensionAPIs.EnableSDSSecretRef,
		ControllerNamespace:             TEGNamespace,
		GatewayNamespaceMode:            eg.GatewayNamespaceMode(),
		MergeGateways:                   gatewayapi.IsMergeGatewaysEnabled(res),
		MergeBackends:                   gatewayapi.ResolveMergeBackendsConfig(res),
		PerResourceSystemCASecret:       eg.RuntimeFlags.IsEnabled(egv1a1.PerResourceSystemCASecret),
		RunningOnHost:                   eg.Provider != nil && eg.Provider.IsRunningOnHost(),
		InfraRemotelyManaged:            eg.Provider != nil && eg.Provider.IsInfraManagedRemotely(),
		Logger:                          logger,
		LuaEnvoyExtensionPolicyDisabled: eg.ExtensionAPIs.LuaDisabled(),
	}
	// Like its runner, keep what was translated when Translate reports errors (they go to the log there).
	result, translateErr := t.Translate(res)
	out := &EnvoyGatewayResult{Config: eg, Gateways: map[string]*EnvoyGatewayProxy{}, HTTPRoutes: result.HTTPRoutes,
		TranslationErrors: translateErr}
	keys := make([]string, 0, len(result.XdsIR))
	for key := range result.XdsIR {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		xdsIR := result.XdsIR[key]
		xt := &translator.Translator{
			ControllerNamespace: TEGNamespace,
			FilterOrder:         xdsIR.FilterOrder,
			RuntimeFlags:        eg.RuntimeFlags,
			Logger:              logger,
		}
		if eg.RateLimit != nil {
			xt.GlobalRateLimit = &translator.GlobalRateLimitSettings{
				ServiceURL: ratelimit.GetServiceURL(TEGNamespace, "cluster.local"),
				FailClosed: eg.RateLimit.FailClosed,
			}
		}
		table, err := xt.Translate(xdsIR)
		if err != nil {
			return nil, fmt.Errorf("Envoy Gateway xDS translation of %s: %w", key, err)
		}
		proxyOut := &EnvoyGatewayProxy{Key: key, Xds: &Config{}, Infra: result.InfraIR[key]}
		for typeURL, list := range table.XdsResources {
			for _, r := range list {
				switch typeURL {
				case resourcev3.ListenerType:
					proxyOut.Xds.Listeners = append(proxyOut.Xds.Listeners, r.(*listener.Listener))
				case resourcev3.ClusterType:
					proxyOut.Xds.Clusters = append(proxyOut.Xds.Clusters, r.(*cluster.Cluster))
				case resourcev3.RouteType:
					proxyOut.Xds.Routes = append(proxyOut.Xds.Routes, r.(*route.RouteConfiguration))
				case resourcev3.EndpointType:
					proxyOut.Xds.Endpoints = append(proxyOut.Xds.Endpoints, r.(*endpoint.ClusterLoadAssignment))
				}
			}
		}
		if proxyOut.Infra != nil {
			render, err := proxy.NewResourceRender(context.Background(), infraProvider{eg: eg}, proxyOut.Infra)
			if err != nil {
				return nil, err
			}
			if proxyOut.Deployment, err = render.Deployment(); err != nil {
				return nil, fmt.Errorf("rendering the Envoy Deployment of %s: %w", key, err)
			}
			if proxyOut.Service, err = render.Service(); err != nil {
				return nil, fmt.Errorf("rendering the Envoy Service of %s: %w", key, err)
			}
		}
		out.Gateways[key] = proxyOut
	}
	return out, nil
}

// infraProvider answers the questions Envoy Gateway's proxy renderer asks its Kubernetes
// infrastructure manager, for a controller running in the TEG namespace.
type infraProvider struct{ eg *egv1a1.EnvoyGateway }

func (p infraProvider) GetControllerNamespace() string        { return TEGNamespace }
func (p infraProvider) GetDNSDomain() string                  { return "cluster.local" }
func (p infraProvider) GetEnvoyGateway() *egv1a1.EnvoyGateway { return p.eg }
func (p infraProvider) GetResourceNamespace(infra *ir.Infra) string {
	if p.eg.GatewayNamespaceMode() {
		return infra.GetProxyInfra().Namespace
	}
	return TEGNamespace
}

func (p infraProvider) GetOwnerReferenceUID(context.Context, *ir.Infra) (map[string]types.UID, error) {
	return nil, nil
}

// rateLimitPolicy is RateLimitPolicy as a typed object.
func rateLimitPolicy() (*egv1a1.BackendTrafficPolicy, error) {
	policy := &egv1a1.BackendTrafficPolicy{}
	if err := yaml.UnmarshalStrict([]byte(RateLimitPolicy), policy); err != nil {
		return nil, fmt.Errorf("the rate limit policy: %w", err)
	}
	return policy, nil
}

// RouteAccepted is the Accepted condition an HTTPRoute got from its parent, as "True" or the reason.
func (r *EnvoyGatewayResult) RouteAccepted(namespace, name string) string {
	for _, hr := range r.HTTPRoutes {
		if hr.Namespace != namespace || hr.Name != name {
			continue
		}
		for _, parent := range hr.Status.Parents {
			for _, cond := range parent.Conditions {
				if cond.Type == string(gwapiv1.RouteConditionAccepted) {
					if cond.Status == "True" {
						return "True"
					}
					return cond.Reason + ": " + cond.Message
				}
			}
		}
		return "no Accepted condition"
	}
	return "HTTPRoute not translated"
}
