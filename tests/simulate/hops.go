package simulate

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"github.com/envoyproxy/gateway/internal/infrastructure/kubernetes/ratelimit"
	"istio.io/istio/pilot/pkg/networking/util"
	"istio.io/istio/pilot/pkg/simulation"
)

// The request of the procedure's example (tests/localcp/site-vars.yml): GET
// http://www.example.com/httpbin/get into Gateway apps port 80, for the httpbin sample behind
// Service httpbin/httpbin port 8000, path prefix /httpbin stripped to /.
const (
	RequestHost   = "www.example.com"
	RequestPath   = "/httpbin/get"
	GatewayPort   = 80
	AppNamespace  = "httpbin"
	AppService    = "httpbin"
	AppPort       = 8000
	AppPath       = "/get" // what httpbin must receive
	AppCluster    = "outbound|8000||httpbin.httpbin.svc.cluster.local"
	AppServiceFQD = "httpbin.httpbin.svc.cluster.local"
)

// Hop is one Envoy's decision on the way, as the hop table shows it.
type Hop struct {
	ID     string // 1, 2, 3, 3p, 4a, 4b, 4c, 4d, 5
	Title  string
	Envoy  string // whose configuration decides
	Call   string // what arrives there
	Match  *Match
	Detail []string // further facts for the table
	OK     bool
	Reason string // why it failed, in the configuration's words
	Cause  Cause  // the condition it failed on (causes.go): what ablations are judged by
}

func (h *Hop) fail(cause Cause, format string, args ...any) *Hop {
	h.OK, h.Cause, h.Reason = false, cause, fmt.Sprintf(format, args...)
	return h
}

// Walk is the request's path through one state.
type Walk struct {
	Routing string
	Hops    []*Hop
}

// Hop finds a hop by id.
func (wk *Walk) Hop(id string) *Hop {
	for _, h := range wk.Hops {
		if h.ID == id {
			return h
		}
	}
	return nil
}

// FirstFailure is the first hop that did not pass, or nil.
func (wk *Walk) FirstFailure() *Hop {
	for _, h := range wk.Hops {
		if !h.OK {
			return h
		}
	}
	return nil
}

// WalkAll walks every hop of the state.
func (w *World) WalkAll() (*Walk, error) {
	if w.Ambient != nil {
		return w.WalkAmbient()
	}
	wk := &Walk{Routing: w.St.Routing}
	h1, err := w.hopEdge()
	if err != nil {
		return nil, fmt.Errorf("hop 1: %w", err)
	}
	wk.Hops = append(wk.Hops, h1)
	h2, err := w.hopEnvoySidecar(h1)
	if err != nil {
		return nil, fmt.Errorf("hop 2: %w", err)
	}
	wk.Hops = append(wk.Hops, h2)
	h3, h3p, err := w.hopAppSidecar(h2)
	if err != nil {
		return nil, fmt.Errorf("hop 3: %w", err)
	}
	wk.Hops = append(wk.Hops, h3, h3p)
	for _, f := range []func() (*Hop, error){w.hopXDS, w.hopRateLimit, w.hopRedis, w.hopRateLimitConfig, w.hopEdgeNotCaptured} {
		h, err := f()
		if err != nil {
			return nil, err
		}
		wk.Hops = append(wk.Hops, h)
	}
	return wk, nil
}

func (w *World) envoyPod() *corev1.Pod {
	ns, name, _ := strings.Cut(w.EnvoyPod, "/")
	return w.Mesh.Pod(ns, name)
}

// servicePort is the Service port of that number.
func servicePort(svc *corev1.Service, port int32) *corev1.ServicePort {
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

// hopEdge (1): TEG's Envoy, with the configuration Envoy Gateway generated for Gateway apps.
func (w *World) hopEdge() (*Hop, error) {
	h := &Hop{ID: "1", Title: "TEG's Envoy", Envoy: "Envoy Gateway's xDS for Gateway " + TEGNamespace + "/" + GatewayName}
	port := servicePort(w.EnvoyService, GatewayPort)
	if port == nil {
		return h.fail(CauseMissingPort, "the Envoy Service %s has no port %d", w.EnvoyService.Name, GatewayPort), nil
	}
	target := int(port.TargetPort.IntVal)
	pod := w.envoyPod()
	h.Call = fmt.Sprintf("GET http://%s%s on Service port %d, container port %d", RequestHost, RequestPath, GatewayPort, target)
	if accepted := w.EG.RouteAccepted(AppNamespace, AppService); accepted != "True" {
		h.Detail = append(h.Detail, "HTTPRoute "+AppNamespace+"/"+AppService+" Accepted: "+accepted)
	}
	m, err := Simulate(w.edgeConfig(), simulation.Call{Address: pod.Status.PodIP, Port: target, Path: RequestPath,
		HostHeader: RequestHost, Protocol: simulation.HTTP, CallMode: simulation.CallModeGateway})
	if err != nil {
		return nil, err
	}
	h.Match = &m
	if m.Error != nil {
		return h.fail(errorCause(m.Error), "%s (listener %q, route configuration %q); HTTPRoute Accepted: %s", errorReason(m.Error), m.ListenerMatched,
			m.RouteConfigMatched, w.EG.RouteAccepted(AppNamespace, AppService)), nil
	}
	m.UpstreamName = w.Describe(m.Upstream)
	h.OK = true
	if m.TLS != "plaintext" {
		return h.fail(CauseTLSToBackend, "Envoy Gateway sends %s to the backend; the sidecar must see plain HTTP to route it", m.TLS), nil
	}
	return h, nil
}

// clusterCause is why a sidecar sending the request to that cluster, not the app's, fails: Istio's
// fallthrough clusters (pilot/pkg/networking/util: PassthroughCluster, BlackHoleCluster) for a destination it
// has no route for, or another cluster.
func clusterCause(name string) Cause {
	switch name {
	case util.PassthroughCluster, util.BlackHoleCluster:
		return CausePassthrough
	}
	return CauseWrongCluster
}

// outboundCaptured tells whether the pod's iptables rules (istio-init's arguments, which the
// injector derives from the traffic.sidecar.istio.io annotations) send a connection to that port
// through the sidecar, and why not.
func outboundCaptured(pod *corev1.Pod, port int) (bool, string) {
	for _, c := range pod.Spec.InitContainers {
		if c.Name != "istio-init" {
			continue
		}
		args := c.Args
		if i := slices.Index(args, "-o"); i >= 0 && i+1 < len(args) {
			for _, p := range strings.Split(strings.Trim(args[i+1], `"`), ",") {
				if p == strconv.Itoa(port) {
					return false, fmt.Sprintf("istio-init excludes outbound port %d (-o %s)", port, args[i+1])
				}
			}
		}
		if i := slices.Index(args, "-i"); i >= 0 && i+1 < len(args) && strings.Trim(args[i+1], `"`) == "" {
			return false, "istio-init captures no outbound address (-i \"\")"
		}
	}
	return true, ""
}

// sidecarOutbound is one pod's sidecar deciding on an outbound connection.
func (w *World) sidecarOutbound(h *Hop, pod *corev1.Pod, call simulation.Call) (*Match, error) {
	cfg, err := w.Mesh.SidecarConfig(pod)
	if err != nil {
		return nil, err
	}
	call.CallMode = simulation.CallModeOutbound
	m, err := Simulate(cfg, call)
	if err != nil {
		return nil, err
	}
	if m.Error == nil {
		m.UpstreamName = w.Describe(m.Upstream)
	}
	return &m, nil
}

// sidecarInbound is the sidecar of the pod at that address accepting a connection. A TLS client
// offers its ALPN list; a filter chain that names any of them matches, so each is tried in order.
func (w *World) sidecarInbound(pod *corev1.Pod, call simulation.Call, alpns ...string) (*Match, error) {
	cfg, err := w.Mesh.SidecarConfig(pod)
	if err != nil {
		return nil, err
	}
	call.CallMode = simulation.CallModeInbound
	call.Address = pod.Status.PodIP
	if len(alpns) == 0 {
		alpns = []string{call.Alpn}
	}
	var first *Match
	for _, alpn := range alpns {
		call.Alpn = alpn
		m, err := Simulate(cfg, call)
		if err != nil {
			return nil, err
		}
		if m.Error == nil {
			return &m, nil
		}
		if first == nil {
			first = &m
		}
	}
	return first, nil
}

func tlsOf(m *Match) simulation.TLSMode {
	switch m.TLS {
	case "ISTIO_MUTUAL":
		return simulation.MTLS
	case "TLS":
		return simulation.TLS
	}
	return simulation.Plaintext
}

func firstALPN(alpn []string) string {
	if len(alpn) > 0 {
		return alpn[0]
	}
	return ""
}

// hopEnvoySidecar (2): the sidecar of TEG's Envoy pod, outbound, with istiod's configuration for it.
func (w *World) hopEnvoySidecar(h1 *Hop) (*Hop, error) {
	pod := w.envoyPod()
	h := &Hop{ID: "2", Title: "sidecar of TEG's Envoy pod, outbound", Envoy: "istiod's xDS for the Envoy pod's sidecar"}
	if !h1.OK {
		return h.fail(CauseEarlierHop, "hop 1 failed"), nil
	}
	upstream, port := hostPort(h1.Match.Upstream)
	h.Call = fmt.Sprintf("%s %s%s to %s", "GET", h1.Match.Host, h1.Match.Path, h1.Match.UpstreamName)
	if !HasSidecar(pod) {
		return h.fail(CauseNoSidecar, "the Envoy pod has no sidecar: %s; the request leaves unencrypted for %s",
			w.Mesh.Injection[w.EnvoyPod], h1.Match.UpstreamName), nil
	}
	if ok, why := outboundCaptured(pod, port); !ok {
		return h.fail(CauseNotCaptured, "not captured: %s", why), nil
	}
	m, err := w.sidecarOutbound(h, pod, simulation.Call{Address: upstream, Port: port, Path: h1.Match.Path,
		HostHeader: h1.Match.Host, Protocol: simulation.HTTP})
	if err != nil {
		return nil, err
	}
	h.Match = m
	switch {
	case m.Error != nil:
		return h.fail(errorCause(m.Error), "%s (listener %q)", errorReason(m.Error), m.ListenerMatched), nil
	case m.ClusterMatched != AppCluster && m.VirtualHostMatched == "":
		return h.fail(clusterCause(m.ClusterMatched), "listener %q has no HTTP route for it and sends it to %s, not to %s: it leaves the sidecar %s for %s",
			m.ListenerMatched, m.ClusterMatched, AppCluster, m.TLS, m.UpstreamName), nil
	case m.ClusterMatched != AppCluster:
		return h.fail(clusterCause(m.ClusterMatched), "route %q of virtual host %q sends it to %s, not to %s: it leaves the sidecar %s for %s",
			m.RouteMatched, m.VirtualHostMatched, m.ClusterMatched, AppCluster, m.TLS, m.UpstreamName), nil
	case m.TLS != "ISTIO_MUTUAL":
		return h.fail(CauseNotIstioMTLS, "cluster %s sends %s to %s, not Istio mutual TLS", m.ClusterMatched, m.TLS, m.UpstreamName), nil
	case m.Path != AppPath:
		return h.fail(CauseWrongPath, "the path reaches the app as %s, not %s", m.Path, AppPath), nil
	}
	h.OK = true
	return h, nil
}

// hopAppSidecar (3, 3p): httpbin's sidecar, inbound: hop 2's mutual TLS connection is accepted and
// handed to the app over HTTP/1.1 (httpbin speaks no HTTP/2); a plaintext request from a pod without
// a sidecar is refused (STRICT).
func (w *World) hopAppSidecar(h2 *Hop) (*Hop, *Hop, error) {
	h := &Hop{ID: "3", Title: "httpbin's sidecar, inbound", Envoy: "istiod's xDS for the httpbin pod's sidecar"}
	hp := &Hop{ID: "3p", Title: "httpbin's sidecar, inbound plaintext from a pod without sidecar",
		Envoy: "istiod's xDS for the httpbin pod's sidecar"}
	pods, err := w.St.PodsOf(AppNamespace, AppService)
	if err != nil || len(pods) == 0 {
		return nil, nil, fmt.Errorf("no running pod of Deployment %s/%s in the state", AppNamespace, AppService)
	}
	pod := w.Mesh.Pod(pods[0].Namespace, pods[0].Name)
	target := 0
	for _, c := range pod.Spec.Containers {
		if c.Name != "istio-proxy" && len(c.Ports) > 0 {
			target = int(c.Ports[0].ContainerPort)
		}
	}
	call := simulation.Call{Port: target, Path: AppPath, HostHeader: AppServiceFQD, Protocol: simulation.HTTP}
	if !HasSidecar(pod) {
		h.fail(CauseNoSidecar, "the httpbin pod has no sidecar: %s", w.Mesh.Injection[pod.Namespace+"/"+pod.Name])
		hp.fail(CauseNoSidecar, "the httpbin pod has no sidecar: nothing refuses plaintext")
		return h, hp, nil
	}
	// Plaintext, as a pod without a sidecar sends it.
	hp.Call = fmt.Sprintf("plaintext GET %s to the pod's port %d", AppPath, target)
	mp, err := w.sidecarInbound(pod, call)
	if err != nil {
		return nil, nil, err
	}
	hp.Match = mp
	if mp.Error == nil {
		hp.fail(CausePlaintextAccepted, "accepted: filter chain %q of listener %q takes plaintext (cluster %s)", mp.FilterChainMatched, mp.ListenerMatched,
			mp.ClusterMatched)
	} else {
		hp.OK = true
		hp.Detail = append(hp.Detail, "refused: "+errorReason(mp.Error))
	}
	if !h2.OK {
		return h.fail(CauseEarlierHop, "hop 2 failed"), hp, nil
	}
	upstream, port := hostPort(h2.Match.Upstream)
	if pod = w.Mesh.PodByIP(upstream); pod == nil {
		return h.fail(CauseWrongCluster, "hop 2 sends it to %s, which is no pod", h2.Match.Upstream), hp, nil
	}
	call.Port, call.Path, call.HostHeader = port, h2.Match.Path, h2.Match.Host
	call.TLS = tlsOf(h2.Match)
	h.Call = fmt.Sprintf("%s GET %s%s on port %d, ALPN %s", h2.Match.TLS, h2.Match.Host, h2.Match.Path, port,
		strings.Join(h2.Match.ALPN, ","))
	m, err := w.sidecarInbound(pod, call, h2.Match.ALPN...)
	if err != nil {
		return nil, nil, err
	}
	h.Match = m
	switch {
	case m.Error != nil:
		return h.fail(errorCause(m.Error), "%s (listener %q)", errorReason(m.Error), m.ListenerMatched), hp, nil
	case m.HTTP2:
		return h.fail(CauseHTTP2Upstream, "cluster %s speaks HTTP/2 to the app, which serves HTTP/1.1 only", m.ClusterMatched), hp, nil
	}
	h.OK = true
	return h, hp, nil
}

// tcpThroughSidecars walks one TCP connection (TLS or not, as the client's own configuration says)
// through the client pod's sidecar and the server pod's sidecar.
func (w *World) tcpThroughSidecars(h *Hop, client *corev1.Pod, host string, port int, tls simulation.TLSMode, alpn string) (*Hop, error) {
	clusterIP, svc, err := w.resolve(host, client.Namespace)
	if err != nil {
		return nil, err
	}
	h.Call = fmt.Sprintf("%s connection to %s:%d (%s)", map[simulation.TLSMode]string{simulation.TLS: "TLS",
		simulation.Plaintext: "plaintext TCP"}[tls], host, port, w.Describe(net.JoinHostPort(clusterIP, strconv.Itoa(port))))
	if alpn != "" {
		h.Call += fmt.Sprintf(", ALPN %q", alpn)
	}
	if w.Ambient != nil {
		h.Envoy = "istiod's workload API and authorizations (ztunnel's xDS)"
		return w.throughZtunnels(h, client, clusterIP, port)
	}
	if !HasSidecar(client) {
		return h.fail(CauseNoSidecar, "the client pod %s has no sidecar: %s", workloadName(client), w.Mesh.Injection[client.Namespace+"/"+client.Name]), nil
	}
	server, err := w.podBehind(svc)
	if err != nil {
		return nil, err
	}
	if ok, why := outboundCaptured(client, port); !ok {
		h.Detail = append(h.Detail, "client side not captured: "+why)
		return w.serverSide(h, server, port, tls, []string{alpn}, "")
	}
	m, err := w.sidecarOutbound(h, client, simulation.Call{Address: clusterIP, Port: port, Protocol: simulation.TCP, TLS: tls,
		Alpn: alpn, Sni: ""})
	if err != nil {
		return nil, err
	}
	h.Match = m
	if m.Error != nil {
		return h.fail(errorCause(m.Error), "client sidecar: %s (listener %q, filter chain %q)", errorReason(m.Error), m.ListenerMatched,
			m.FilterChainMatched), nil
	}
	if m.RouteMatched != "" || m.VirtualHostMatched != "" {
		return h.fail(CauseRoutedAsHTTP, "client sidecar: filter chain %q routes it as HTTP (virtual host %q)", m.FilterChainMatched,
			m.VirtualHostMatched), nil
	}
	if strings.Contains(m.ClusterMatched, "Passthrough") {
		h.Detail = append(h.Detail, "client sidecar passes it through as is ("+m.ClusterMatched+")")
		return w.serverSide(h, server, port, tls, []string{alpn}, "")
	}
	_, upPort := hostPort(m.Upstream)
	return w.serverSide(h, server, upPort, tlsOf(m), m.ALPN, m.ClusterMatched)
}

func (w *World) serverSide(h *Hop, server *corev1.Pod, port int, tls simulation.TLSMode, alpns []string, via string) (*Hop, error) {
	if !HasSidecar(server) {
		return h.fail(CauseNoSidecar, "the server pod %s has no sidecar: %s", workloadName(server), w.Mesh.Injection[server.Namespace+"/"+server.Name]), nil
	}
	in, err := w.sidecarInbound(server, simulation.Call{Port: port, Protocol: simulation.TCP, TLS: tls}, alpns...)
	if err != nil {
		return nil, err
	}
	h.Detail = append(h.Detail, fmt.Sprintf("server sidecar: listener %q, filter chain %q, cluster %q", in.ListenerMatched,
		in.FilterChainMatched, in.ClusterMatched))
	if in.Error != nil {
		what := map[simulation.TLSMode]string{simulation.Plaintext: "plaintext", simulation.TLS: "the client's own TLS",
			simulation.MTLS: "Istio mutual TLS"}[tls]
		return h.fail(errorCause(in.Error), "server sidecar of %s refuses %s on port %d: %s", workloadName(server), what, port,
			errorReason(in.Error)), nil
	}
	if in.RouteMatched != "" || in.VirtualHostMatched != "" {
		return h.fail(CauseRoutedAsHTTP, "server sidecar routes it as HTTP (virtual host %q)", in.VirtualHostMatched), nil
	}
	if via != "" && h.Match != nil && h.Match.TLS != "ISTIO_MUTUAL" {
		return h.fail(CauseNotIstioMTLS, "cluster %s sends it %s, not over Istio mutual TLS", via, h.Match.TLS), nil
	}
	h.OK = true
	return h, nil
}

// resolve turns a Service DNS name into its ClusterIP; a bare name is a Service of the client's namespace
// (the pod's DNS search path starts with <namespace>.svc.cluster.local).
func (w *World) resolve(host, clientNamespace string) (string, *corev1.Service, error) {
	parts := strings.Split(host, ".")
	if len(parts) == 1 {
		parts = append(parts, clientNamespace)
	}
	svc, err := TypedOne[corev1.Service](w.St, "Service", parts[1], parts[0])
	if err != nil {
		return "", nil, err
	}
	return svc.Spec.ClusterIP, svc, nil
}

// podBehind is a running pod the Service selects.
func (w *World) podBehind(svc *corev1.Service) (*corev1.Pod, error) {
	for _, p := range w.Mesh.Pods {
		if p.Namespace != svc.Namespace || len(svc.Spec.Selector) == 0 {
			continue
		}
		match := true
		for k, v := range svc.Spec.Selector {
			if p.Labels[k] != v {
				match = false
			}
		}
		if match {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no running pod behind Service %s/%s", svc.Namespace, svc.Name)
}

// bootstrapCluster is a static cluster of the bootstrap Envoy Gateway gives its Envoy (the
// --config-yaml argument of the envoy container of the Envoy Deployment).
func (w *World) bootstrapCluster(name string) (*cluster.Cluster, error) {
	pod := w.envoyPod()
	for _, c := range pod.Spec.Containers {
		if c.Name != "envoy" {
			continue
		}
		i := slices.Index(c.Args, "--config-yaml")
		if i < 0 || i+1 >= len(c.Args) {
			break
		}
		var b struct {
			StaticResources struct {
				Clusters []map[string]any `json:"clusters"`
			} `json:"static_resources"`
		}
		if err := yaml.Unmarshal([]byte(c.Args[i+1]), &b); err != nil {
			return nil, fmt.Errorf("Envoy bootstrap: %w", err)
		}
		for _, raw := range b.StaticResources.Clusters {
			if raw["name"] != name {
				continue
			}
			text, err := json.Marshal(raw)
			if err != nil {
				return nil, err
			}
			cl := &cluster.Cluster{}
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(text, cl); err != nil {
				return nil, fmt.Errorf("Envoy bootstrap cluster %s: %w", name, err)
			}
			return cl, nil
		}
		return nil, fmt.Errorf("the Envoy bootstrap has no cluster %s", name)
	}
	return nil, fmt.Errorf("the Envoy pod has no envoy container with --config-yaml")
}

// clusterTarget is a DNS cluster's host, port, TLS and ALPN, as its client Envoy connects.
func clusterTarget(cl *cluster.Cluster) (string, int, simulation.TLSMode, string, error) {
	lb := firstEndpoint(cl.GetLoadAssignment())
	sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
	tls, alpn := simulation.Plaintext, ""
	if ts := cl.GetTransportSocket(); ts != nil && ts.GetTypedConfig() != nil && !strings.HasSuffix(ts.GetName(), "raw_buffer") {
		tls = simulation.TLS
		up := &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(up); err != nil {
			return "", 0, "", "", err
		}
		alpn = firstALPN(up.GetCommonTlsContext().GetAlpnProtocols())
	}
	return sa.GetAddress(), int(sa.GetPortValue()), tls, alpn, nil
}

// hopXDS (4a): TEG's Envoy pods to envoy-gateway port 18000 (xDS), as their bootstrap says.
func (w *World) hopXDS() (*Hop, error) {
	h := &Hop{ID: "4a", Title: "TEG's Envoy to envoy-gateway:18000 (xDS)", Envoy: "istiod's xDS for the Envoy pod's and envoy-gateway's sidecars"}
	cl, err := w.bootstrapCluster("xds_cluster")
	if err != nil {
		return nil, err
	}
	host, port, tls, alpn, err := clusterTarget(cl)
	if err != nil {
		return nil, err
	}
	h.Detail = append(h.Detail, fmt.Sprintf("Envoy bootstrap cluster xds_cluster: %s:%d, %s, HTTP/2 %v", host, port, tls, speaksHTTP2(cl)))
	return w.tcpThroughSidecars(h, w.envoyPod(), host, port, tls, alpn)
}

// RateLimitPolicy is a user's global rate limit on the app's route (ratelimit-policy.yaml): TEG's
// Envoy only talks to envoy-ratelimit when some route has one.
//
//go:embed ratelimit-policy.yaml
var RateLimitPolicy string

// hopRateLimit (4b): TEG's Envoy pods to envoy-ratelimit port 8081 (gRPC over TLS), as the rate limit
// cluster Envoy Gateway generates says.
func (w *World) hopRateLimit() (*Hop, error) {
	h := &Hop{ID: "4b", Title: "TEG's Envoy to envoy-ratelimit:8081 (rate limit, gRPC over TLS)",
		Envoy: "istiod's xDS for the Envoy pod's and envoy-ratelimit's sidecars"}
	clusters := []*cluster.Cluster(nil)
	if w.Live != nil { // run.py applied the policy to the running cluster
		clusters = w.Live.EnvoyGateway.Clusters
	} else {
		policy, err := rateLimitPolicy()
		if err != nil {
			return nil, err
		}
		var extra []*egv1a1.BackendTrafficPolicy
		if len(w.St.Find("BackendTrafficPolicy", policy.Namespace, policy.Name)) == 0 {
			extra = append(extra, policy)
		}
		eg, err := TranslateEnvoyGateway(w.St, extra...)
		if err != nil {
			return nil, err
		}
		clusters = eg.Gateways[TEGNamespace+"/"+GatewayName].Xds.Clusters
	}
	for _, cl := range clusters {
		lb := firstEndpoint(cl.GetLoadAssignment())
		if !strings.HasPrefix(lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress(), "envoy-ratelimit.") {
			continue
		}
		host, port, tls, alpn, err := clusterTarget(cl)
		if err != nil {
			return nil, err
		}
		h.Detail = append(h.Detail, fmt.Sprintf("Envoy Gateway cluster %s: %s:%d, %s, HTTP/2 %v", cl.GetName(), host, port, tls, speaksHTTP2(cl)))
		return w.tcpThroughSidecars(h, w.envoyPod(), host, port, tls, alpn)
	}
	return nil, fmt.Errorf("Envoy Gateway generated no cluster for envoy-ratelimit with a global rate limit policy")
}

// rateLimitEnv is the environment of the rate-limit pods' container: the running pod's (a real Envoy
// Gateway's Deployment), or else what Envoy Gateway's rate-limit renderer (internal/infrastructure/kubernetes/
// ratelimit, the code its infrastructure manager runs) gives the Deployment for the state's EnvoyGateway
// configuration, because the stand-in fixture's Deployment carries no env. source says which.
func (w *World) rateLimitEnv() (client *corev1.Pod, env map[string]string, source string, err error) {
	pods, err := w.St.PodsOf(TEGNamespace, ratelimit.InfraName)
	if err != nil || len(pods) == 0 {
		return nil, nil, "", fmt.Errorf("no running %s pod in the state", ratelimit.InfraName)
	}
	client = w.Mesh.Pod(pods[0].Namespace, pods[0].Name)
	env, source = map[string]string{}, "the pod's environment"
	// The limiter's own container (not the sidecar the injector adds), named as Envoy Gateway names it.
	limiter := func(c corev1.Container) bool { return c.Name == ratelimit.InfraName && len(c.Env) > 0 }
	containers := client.Spec.Containers
	if !slices.ContainsFunc(containers, limiter) {
		eg, err := envoyGatewayConfig(w.St)
		if err != nil {
			return nil, nil, "", err
		}
		dep, err := ratelimit.NewResourceRender(TEGNamespace, eg, nil).Deployment()
		if err != nil {
			return nil, nil, "", fmt.Errorf("Envoy Gateway's rate-limit renderer: %w", err)
		}
		containers, source = dep.Spec.Template.Spec.Containers, "the environment Envoy Gateway's rate-limit renderer gives it"
	}
	for _, c := range slices.DeleteFunc(slices.Clone(containers), func(c corev1.Container) bool { return !limiter(c) }) {
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
	}
	return client, env, source, nil
}

// hopRedis (4c): the rate-limit pods to Redis (teg-redis), at the address their Deployment gives.
func (w *World) hopRedis() (*Hop, error) {
	h := &Hop{ID: "4c", Title: "envoy-ratelimit to teg-redis:6379", Envoy: "istiod's xDS for envoy-ratelimit's and teg-redis's sidecars"}
	client, env, _, err := w.rateLimitEnv()
	if err != nil {
		return nil, err
	}
	redisURL, redisTLS := env[ratelimit.RedisURLEnvVar], env[ratelimit.RedisTLSEnvVar] == "true"
	host, portText, err := net.SplitHostPort(redisURL)
	if err != nil {
		return nil, fmt.Errorf("Redis URL %q: %w", redisURL, err)
	}
	port, _ := strconv.Atoi(portText)
	tls := simulation.Plaintext
	if redisTLS {
		tls = simulation.TLS
	}
	h.Detail = append(h.Detail, fmt.Sprintf("Redis URL of the rate-limit service: %s (TLS %v)", redisURL, redisTLS))
	return w.tcpThroughSidecars(h, client, host, port, tls, "")
}

// grpcALPN is what a gRPC-Go client offers in its TLS handshake (grpc-go credentials/tls.go appends "h2" to
// NextProtos): the rate limiter's xDS client is one.
const grpcALPN = "h2"

// hopRateLimitConfig (4d): the rate-limit pods to envoy-gateway port 18001, where Envoy Gateway serves their
// configuration (the descriptors of every rate limit) over xDS, as CONFIG_GRPC_XDS_SERVER_URL says; without
// it the limiter starts with no configuration (FORCE_START_WITHOUT_INITIAL_CONFIG) and limits nothing.
func (w *World) hopRateLimitConfig() (*Hop, error) {
	h := &Hop{ID: "4d", Title: "envoy-ratelimit to envoy-gateway:18001 (its configuration over xDS)",
		Envoy: "istiod's xDS for envoy-ratelimit's and envoy-gateway's sidecars"}
	client, env, source, err := w.rateLimitEnv()
	if err != nil {
		return nil, err
	}
	url := env[ratelimit.ConfigGrpcXdsServerURLEnvVar]
	host, portText, err := net.SplitHostPort(url)
	if err != nil {
		return nil, fmt.Errorf("%s %q of the rate-limit service: %w", ratelimit.ConfigGrpcXdsServerURLEnvVar, url, err)
	}
	port, _ := strconv.Atoi(portText)
	tls, alpn := simulation.Plaintext, ""
	if env[ratelimit.ConfigGRPCXDSServerUseTLSEnvVar] == "true" {
		tls, alpn = simulation.TLS, grpcALPN
	}
	h.Detail = append(h.Detail, fmt.Sprintf("%s=%s, %s=%s (%s)", ratelimit.ConfigGrpcXdsServerURLEnvVar, url,
		ratelimit.ConfigGRPCXDSServerUseTLSEnvVar, env[ratelimit.ConfigGRPCXDSServerUseTLSEnvVar], source))
	return w.tcpThroughSidecars(h, client, host, port, tls, alpn)
}

// edgeInbound starts hop 5, in either mesh mode: a plaintext request from outside the mesh to the Envoy pod's
// container port behind the Envoy Service's port 80; not ok (the hop failed) when that Service has no such port.
func (w *World) edgeInbound(decides string) (h *Hop, pod *corev1.Pod, target int, ok bool) {
	h = &Hop{ID: "5", Title: "inbound to TEG's Envoy (edge port)", Envoy: decides}
	port := servicePort(w.EnvoyService, GatewayPort)
	if port == nil {
		return h.fail(CauseMissingPort, "the Envoy Service has no port %d", GatewayPort), nil, 0, false
	}
	target = int(port.TargetPort.IntVal)
	h.Call = fmt.Sprintf("plaintext GET from outside the mesh to container port %d", target)
	return h, w.envoyPod(), target, true
}

// hopEdgeNotCaptured (5): with includeInboundPorts "", the Envoy pod's iptables capture no inbound
// port, so the edge traffic reaches Envoy's listener (hop 1) without its sidecar.
func (w *World) hopEdgeNotCaptured() (*Hop, error) {
	h, pod, target, ok := w.edgeInbound("the Envoy pod's istio-init (injector)")
	if !ok {
		return h, nil
	}
	if !HasSidecar(pod) {
		h.Detail = append(h.Detail, "no sidecar: nothing captures inbound traffic")
		h.OK = true
		return h, nil
	}
	ports, err := InterceptedInboundPorts(pod)
	if err != nil {
		return nil, err
	}
	h.Detail = append(h.Detail, fmt.Sprintf("istio-init -b %q", ports))
	captured := ports == "*" || slices.Contains(strings.Split(ports, ","), strconv.Itoa(target))
	if !captured {
		h.OK = true
		return h, nil
	}
	m, err := w.sidecarInbound(pod, simulation.Call{Port: target, Path: RequestPath, HostHeader: RequestHost, Protocol: simulation.HTTP})
	if err != nil {
		return nil, err
	}
	h.Match = m
	if m.Error != nil {
		return h.fail(errorCause(m.Error), "captured by the sidecar (-b %q), which refuses it: %s", ports, errorReason(m.Error)), nil
	}
	return h.fail(CauseInboundCaptured, "captured by the sidecar (-b %q): filter chain %q of listener %q, not Envoy's own listener", ports,
		m.FilterChainMatched, m.ListenerMatched), nil
}
