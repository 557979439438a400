package simulate

// The ambient walk: TEG's Envoy and the apps enrolled in Istio's ambient mode (teg_istio_mesh_mode: ambient),
// where ztunnel on each node, not a sidecar, carries every enrolled pod's connections. ztunnel is not built
// here; what it does with a connection is decided by what istiod serves it, the workload API (Address
// resources: workloads and services) and the Authorization resources, over delta xDS. The suite asks the
// in-process istiod for exactly those, as a client presenting itself as ztunnel, and walks each hop through
// them with the rules ztunnel applies (docs/traffic-simulation.md, "The ambient walk").

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	securityclient "istio.io/client-go/pkg/apis/security/v1"
	"istio.io/istio/pilot/pkg/features"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

const (
	dataplaneModeLabel    = "istio.io/dataplane-mode"
	redirectionAnnotation = "ambient.istio.io/redirection"
	bypassInboundCapture  = "ambient.istio.io/bypass-inbound-capture"
	cniDaemonSet          = "istio-cni-node"
	waypointClass         = "istio-waypoint"
	// hbonePort is where ztunnel accepts HBONE (mutual TLS, HTTP/2 CONNECT) for the pods of its node.
	hbonePort = 15008
)

// AmbientView is istiod's workload API for the state: what every ztunnel receives.
type AmbientView struct {
	Workloads map[string]*workloadapi.Workload // by address (pod IP)
	Services  map[string]*workloadapi.Service  // by ClusterIP
	Policies  map[string]*security.Authorization
}

// ambientEnrolled says whether istio-cni's node agent redirects the pod into ztunnel, by the rules of its
// default enablement selector (istio/istio cni/pkg/util/podutil.go, pkg/config/constants): the pod or its
// namespace is labelled istio.io/dataplane-mode=ambient, the pod is not labelled `none`, it has no sidecar
// and is not on the host network.
func ambientEnrolled(pod *corev1.Pod, ns *corev1.Namespace) (bool, string) {
	switch {
	case pod.Labels[dataplaneModeLabel] == "none":
		return false, "pod labelled " + dataplaneModeLabel + "=none"
	case HasSidecar(pod) || pod.Annotations["sidecar.istio.io/status"] != "":
		return false, "it has a sidecar"
	case pod.Spec.HostNetwork:
		return false, "it runs on the host network"
	case pod.Labels[dataplaneModeLabel] == "ambient":
		return true, "pod labelled " + dataplaneModeLabel + "=ambient"
	case ns != nil && ns.Labels[dataplaneModeLabel] == "ambient":
		return true, "namespace labelled " + dataplaneModeLabel + "=ambient"
	}
	return false, "neither the pod nor its namespace is labelled " + dataplaneModeLabel + "=ambient"
}

// cniAgentRuns tells whether the state has istio-cni's node agent (the DaemonSet istio_install installs in
// ambient mode): only then is any pod redirected.
func cniAgentRuns(st *State) bool {
	return len(st.Find("DaemonSet", "", cniDaemonSet)) > 0
}

// redirect is istio-cni's node agent, which no process plays here: once it has set up a pod's redirection
// into ztunnel it writes the annotation ambient.istio.io/redirection: enabled, the annotation istiod reads to
// list the pod as an HBONE workload. It tells whether it wrote it (a pod the running agent annotated stays).
func redirect(pod *corev1.Pod, ns *corev1.Namespace) (*corev1.Pod, bool) {
	if ok, _ := ambientEnrolled(pod, ns); !ok || pod.Annotations[redirectionAnnotation] != "" {
		return pod, false
	}
	out := pod.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[redirectionAnnotation] = "enabled"
	return out, true
}

// FetchAmbient asks the in-process istiod for its workload API and authorizations over delta ADS, as ztunnel
// does: a client whose node ID says ztunnel, one wildcard subscription per type, the first response.
func (m *Mesh) FetchAmbient(t *testing.T) (*AmbientView, error) {
	if !features.EnableAmbient {
		return nil, fmt.Errorf("istiod runs without ambient: start the suite with PILOT_ENABLE_AMBIENT=true (run.py does)")
	}
	m.Fake.EnsureSynced(t)
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return m.Fake.BufListener.Dial() }))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v := &AmbientView{Workloads: map[string]*workloadapi.Workload{}, Services: map[string]*workloadapi.Service{},
		Policies: map[string]*security.Authorization{}}
	node := &core.Node{Id: "ztunnel~10.244.0.250~ztunnel-walk.istio-system~istio-system.svc.cluster.local"}
	for _, typeURL := range []string{v3.AddressType, v3.WorkloadAuthorizationType} {
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("istiod's %s for ztunnel: %w", typeURL, err)
		}
		for _, r := range resp.Resources {
			switch typeURL {
			case v3.AddressType:
				a := &workloadapi.Address{}
				if err := r.Resource.UnmarshalTo(a); err != nil {
					return nil, fmt.Errorf("address %s: %w", r.Name, err)
				}
				if wl := a.GetWorkload(); wl != nil {
					for _, b := range wl.Addresses {
						v.Workloads[ipString(b)] = wl
					}
				}
				if svc := a.GetService(); svc != nil {
					for _, na := range svc.Addresses {
						v.Services[ipString(na.Address)] = svc
					}
				}
			default:
				p := &security.Authorization{}
				if err := r.Resource.UnmarshalTo(p); err != nil {
					return nil, fmt.Errorf("authorization %s: %w", r.Name, err)
				}
				v.Policies[p.Namespace+"/"+p.Name] = p
			}
		}
		_ = stream.CloseSend()
	}
	if len(v.Workloads) == 0 {
		return nil, fmt.Errorf("istiod's workload API lists no workload for the state")
	}
	return v, nil
}

func ipString(b []byte) string {
	if a, ok := netip.AddrFromSlice(b); ok {
		return a.String()
	}
	return fmt.Sprintf("%x", b)
}

// identity is the SPIFFE identity ztunnel presents for a workload in HBONE (its certificate's URI SAN,
// without the scheme, as ztunnel's authorization compares principals).
func identity(wl *workloadapi.Workload) string {
	td := wl.TrustDomain
	if td == "" {
		td = "cluster.local"
	}
	return fmt.Sprintf("%s/ns/%s/sa/%s", td, wl.Namespace, wl.ServiceAccount)
}

// policiesOf are the authorizations ztunnel applies to connections to a workload: those the workload names
// (selected by it), and those whose scope covers all the mesh or the workload's namespace.
func (v *AmbientView) policiesOf(wl *workloadapi.Workload) []*security.Authorization {
	var out []*security.Authorization
	for _, name := range wl.AuthorizationPolicies {
		if p := v.Policies[name]; p != nil {
			out = append(out, p)
		}
	}
	for _, p := range v.Policies {
		if (p.Scope == security.Scope_GLOBAL || (p.Scope == security.Scope_NAMESPACE && p.Namespace == wl.Namespace)) &&
			!slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name })
	return out
}

// inboundConn is a connection as ztunnel's authorization sees it at the destination.
type inboundConn struct {
	principal string // the peer's identity; empty for plaintext
	namespace string // the peer's namespace (from its identity)
	port      uint32 // destination port
}

// authorize is the authorization decision ztunnel makes with these policies, as Istio's workload API defines
// them (istio/istio pkg/workloadapi/security/authorization.proto) and Istio's authorization documents it: a
// matching DENY policy refuses; where ALLOW policies exist, one must match; otherwise the connection is
// allowed; dry-run policies are not enforced. A policy matches when any of its groups does, a group when all
// its rules do; a match when every kind of condition it sets holds (values of one kind are OR-ed). What the
// walk cannot judge (a rule of several matches, addresses, service accounts) makes it say so, not guess.
func authorize(policies []*security.Authorization, c inboundConn) (allowed bool, cause Cause, why string, err error) {
	var allows []string
	for _, p := range policies {
		if p.DryRun {
			continue
		}
		hit, err := policyMatches(p, c)
		if err != nil {
			return false, "", "", err
		}
		name := p.Namespace + "/" + p.Name
		switch p.Action {
		case security.Action_DENY:
			if hit {
				return false, CauseRBACDeny, "DENY policy " + name + " matches", nil
			}
		case security.Action_ALLOW:
			if hit {
				return true, "", "ALLOW policy " + name + " matches", nil
			}
			allows = append(allows, name)
		}
	}
	if len(allows) > 0 {
		return false, CauseRBACNoAllow, "no ALLOW policy matches (" + strings.Join(allows, ", ") + ")", nil
	}
	return true, "", "no policy refuses it", nil
}

func policyMatches(p *security.Authorization, c inboundConn) (bool, error) {
	for _, g := range p.Groups {
		all := true
		for _, r := range g.Rules {
			if len(r.Matches) != 1 {
				return false, fmt.Errorf("policy %s/%s: a rule of %d matches, which the walk does not judge", p.Namespace, p.Name,
					len(r.Matches))
			}
			ok, err := matchOne(r.Matches[0], c)
			if err != nil {
				return false, fmt.Errorf("policy %s/%s: %w", p.Namespace, p.Name, err)
			}
			all = all && ok
		}
		if all {
			return true, nil
		}
	}
	return false, nil
}

func matchOne(m *security.Match, c inboundConn) (bool, error) {
	if len(m.SourceIps)+len(m.NotSourceIps)+len(m.DestinationIps)+len(m.NotDestinationIps)+len(m.ServiceAccounts)+
		len(m.NotServiceAccounts) > 0 {
		return false, fmt.Errorf("a match on addresses or service accounts, which the walk does not judge")
	}
	ok := true
	if len(m.Principals) > 0 {
		ok = ok && slices.ContainsFunc(m.Principals, func(s *security.StringMatch) bool { return stringMatches(s, c.principal) })
	}
	if len(m.NotPrincipals) > 0 {
		ok = ok && !slices.ContainsFunc(m.NotPrincipals, func(s *security.StringMatch) bool { return stringMatches(s, c.principal) })
	}
	if len(m.Namespaces) > 0 {
		ok = ok && slices.ContainsFunc(m.Namespaces, func(s *security.StringMatch) bool { return stringMatches(s, c.namespace) })
	}
	if len(m.NotNamespaces) > 0 {
		ok = ok && !slices.ContainsFunc(m.NotNamespaces, func(s *security.StringMatch) bool { return stringMatches(s, c.namespace) })
	}
	if len(m.DestinationPorts) > 0 {
		ok = ok && slices.Contains(m.DestinationPorts, c.port)
	}
	if len(m.NotDestinationPorts) > 0 {
		ok = ok && !slices.Contains(m.NotDestinationPorts, c.port)
	}
	return ok, nil
}

// stringMatches is a StringMatch against a value; the empty value (no peer identity) matches nothing,
// not even presence.
func stringMatches(s *security.StringMatch, value string) bool {
	if value == "" {
		return false
	}
	switch mt := s.MatchType.(type) {
	case *security.StringMatch_Exact:
		return value == mt.Exact
	case *security.StringMatch_Prefix:
		return strings.HasPrefix(value, mt.Prefix)
	case *security.StringMatch_Suffix:
		return strings.HasSuffix(value, mt.Suffix)
	case *security.StringMatch_Presence:
		return true
	}
	return false
}

// ambientPolicies are the state's PeerAuthentications and AuthorizationPolicies as Kubernetes objects:
// istiod's ambient index reads them from the API server (its informers), not from the configuration store the
// sidecars' configuration comes from.
func ambientPolicies(st *State) ([]runtime.Object, error) {
	var out []runtime.Object
	for _, kind := range []string{"PeerAuthentication", "AuthorizationPolicy"} {
		for _, obj := range st.Find(kind, "", "") {
			raw, err := json.Marshal(obj)
			if err != nil {
				return nil, err
			}
			var typed runtime.Object
			if kind == "PeerAuthentication" {
				typed = &securityclient.PeerAuthentication{}
			} else {
				typed = &securityclient.AuthorizationPolicy{}
			}
			if err := json.Unmarshal(raw, typed); err != nil {
				return nil, fmt.Errorf("%s in the state: %w", kind, err)
			}
			typed.GetObjectKind().SetGroupVersionKind(securityclient.SchemeGroupVersion.WithKind(kind))
			out = append(out, typed)
		}
	}
	// Waypoints: Gateways of Istio's waypoint class, which the ambient index reads the same way.
	for _, obj := range st.Find("Gateway", "", "") {
		if class, _, _ := unstructured.NestedString(obj, "spec", "gatewayClassName"); class != waypointClass {
			continue
		}
		gw := &gatewayv1.Gateway{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, gw); err != nil {
			return nil, fmt.Errorf("waypoint Gateway in the state: %w", err)
		}
		gw.SetGroupVersionKind(gatewayv1.SchemeGroupVersion.WithKind("Gateway"))
		out = append(out, gw)
	}
	return out, nil
}

// --- hops ----------------------------------------------------------------------------------------

// ztunnelPath is where ztunnel sends a connection that a pod opens to addr:port: the Service of that
// ClusterIP and the endpoint it picks (or the workload of that pod IP), the target port, the waypoint if
// one is in the way, and whether it goes over HBONE.
type ztunnelPath struct {
	service   *workloadapi.Service
	dest      *workloadapi.Workload
	port      uint32
	waypoint  string
	hbone     bool
	describes string
}

func (w *World) ztunnelRoute(addr string, port int) (*ztunnelPath, error) {
	v := w.Ambient
	p := &ztunnelPath{port: uint32(port)}
	if svc := v.Services[addr]; svc != nil {
		p.service = svc
		if gw := svc.GetWaypoint(); gw != nil {
			p.waypoint = waypointName(gw)
		}
		key := svc.Namespace + "/" + svc.Hostname
		var endpoints []*workloadapi.Workload
		for _, wl := range v.Workloads {
			if _, ok := wl.Services[key]; ok && !slices.Contains(endpoints, wl) {
				endpoints = append(endpoints, wl)
			}
		}
		if len(endpoints) == 0 {
			return nil, fmt.Errorf("Service %s has no workload in istiod's workload API", key)
		}
		sort.Slice(endpoints, func(i, j int) bool { return endpoints[i].Uid < endpoints[j].Uid })
		p.dest = endpoints[0]
		for _, sp := range svc.Ports {
			if sp.ServicePort == uint32(port) {
				p.port = sp.TargetPort
			}
		}
		if ports := p.dest.Services[key]; ports != nil {
			for _, wp := range ports.Ports {
				if wp.ServicePort == uint32(port) && wp.TargetPort != 0 {
					p.port = wp.TargetPort
				}
			}
		}
		p.describes = fmt.Sprintf("Service %s (port %d) → workload %s/%s, target port %d", key, port, p.dest.Namespace, p.dest.WorkloadName, p.port)
	} else if wl := v.Workloads[addr]; wl != nil {
		p.dest = wl
		if gw := wl.GetWaypoint(); gw != nil {
			p.waypoint = waypointName(gw)
		}
		p.describes = fmt.Sprintf("workload %s/%s (a pod IP: no Service, so no Service waypoint), port %d", wl.Namespace, wl.WorkloadName, port)
	} else {
		return nil, fmt.Errorf("%s is neither a Service nor a workload in istiod's workload API", addr)
	}
	p.hbone = p.dest.TunnelProtocol == workloadapi.TunnelProtocol_HBONE
	return p, nil
}

// serviceWaypoint names the waypoint of a Service the workload serves, if any: what a connection to that
// Service's address goes through, and a connection to the pod's own IP does not.
func (v *AmbientView) serviceWaypoint(wl *workloadapi.Workload) string {
	for key := range wl.Services {
		for _, svc := range v.Services {
			if svc.Namespace+"/"+svc.Hostname == key && svc.GetWaypoint() != nil {
				return fmt.Sprintf("waypoint %s of Service %s", waypointName(svc.GetWaypoint()), key)
			}
		}
	}
	return ""
}

func waypointName(gw *workloadapi.GatewayAddress) string {
	if h := gw.GetHostname(); h != nil {
		return h.Namespace + "/" + h.Hostname
	}
	return ipString(gw.GetAddress().GetAddress())
}

// throughZtunnels walks a connection a pod opens to addr:port (a ClusterIP or a pod IP) through the source
// pod's ztunnel and the destination's: captured at the source, sent over HBONE with the source's identity,
// accepted by the destination's authorizations. ztunnel carries the bytes as they are (TLS included): no
// protocol is sniffed on the way.
func (w *World) throughZtunnels(h *Hop, client *corev1.Pod, addr string, port int) (*Hop, error) {
	src := w.Ambient.Workloads[client.Status.PodIP]
	if src == nil {
		return nil, fmt.Errorf("pod %s is not in istiod's workload API", workloadName(client))
	}
	route, err := w.ztunnelRoute(addr, port)
	if err != nil {
		return h.fail(CauseNoZtunnelRoute, "%v", err), nil
	}
	h.Detail = append(h.Detail, route.describes)
	if route.waypoint != "" && src.TunnelProtocol == workloadapi.TunnelProtocol_HBONE {
		// The waypoint's own Envoy configuration is not walked: the hop ends where ztunnel hands it over.
		h.Detail = append(h.Detail, fmt.Sprintf("source ztunnel: HBONE (mutual TLS as %s) to waypoint %s, which applies the "+
			"Service's L7 policies (its configuration is not walked)", identity(src), route.waypoint))
		h.OK = true
		return h, nil
	}
	if skipped := w.Ambient.serviceWaypoint(route.dest); route.service == nil && skipped != "" {
		return h.fail(CauseWaypointSkipped, "sent to a pod IP, so ztunnel goes straight to the pod and skips %s, and with it the L7 policies "+
			"there", skipped), nil
	}
	conn := inboundConn{port: route.port}
	if src.TunnelProtocol == workloadapi.TunnelProtocol_HBONE {
		if !route.hbone {
			h.Detail = append(h.Detail, fmt.Sprintf("source ztunnel: the destination is no HBONE workload, so plaintext to %s:%d",
				ipString(route.dest.Addresses[0]), route.port))
		} else {
			h.Detail = append(h.Detail, fmt.Sprintf("source ztunnel: HBONE (mutual TLS as %s) to %s:%d, CONNECT to port %d",
				identity(src), ipString(route.dest.Addresses[0]), hbonePort, route.port))
			conn.principal, conn.namespace = identity(src), src.Namespace
		}
	} else {
		_, why := ambientEnrolled(client, w.namespace(client.Namespace))
		h.Detail = append(h.Detail, fmt.Sprintf("%s is no ztunnel workload (tunnel protocol %s: %s): it leaves in plaintext",
			workloadName(client), src.TunnelProtocol, why))
	}
	if route.dest.TunnelProtocol != workloadapi.TunnelProtocol_HBONE {
		h.OK = true
		h.Detail = append(h.Detail, "the destination is not in the mesh: no ztunnel receives it")
		return h, nil
	}
	allowed, cause, why, err := authorize(w.Ambient.policiesOf(route.dest), conn)
	if err != nil {
		return nil, err
	}
	if !allowed {
		what := "plaintext"
		if conn.principal != "" {
			what = "HBONE from " + conn.principal
		}
		return h.fail(cause, "the destination's ztunnel refuses %s: %s", what, why), nil
	}
	h.Detail = append(h.Detail, "destination ztunnel: "+why)
	h.OK = true
	return h, nil
}

func (w *World) namespace(name string) *corev1.Namespace {
	ns, _ := TypedOne[corev1.Namespace](w.St, "Namespace", "", name)
	return ns
}

// WalkAmbient walks the request and TEG's own connections through ztunnel.
func (w *World) WalkAmbient() (*Walk, error) {
	wk := &Walk{Routing: w.St.Routing}
	h1, err := w.hopEdge()
	if err != nil {
		return nil, fmt.Errorf("hop 1: %w", err)
	}
	wk.Hops = append(wk.Hops, h1)
	h2 := &Hop{ID: "2", Title: "ztunnel of TEG's Envoy pod, then httpbin's ztunnel", Envoy: "istiod's workload API and authorizations (ztunnel's xDS)"}
	if !h1.OK {
		h2.fail(CauseEarlierHop, "hop 1 failed")
	} else {
		upstream, port := hostPort(h1.Match.Upstream)
		h2.Call = fmt.Sprintf("GET %s%s to %s", h1.Match.Host, h1.Match.Path, h1.Match.UpstreamName)
		if h2, err = w.throughZtunnels(h2, w.envoyPod(), upstream, port); err != nil {
			return nil, fmt.Errorf("hop 2: %w", err)
		}
		if h2.OK && h1.Match.Path != AppPath {
			h2.fail(CauseWrongPath, "the path reaches the app as %s, not %s", h1.Match.Path, AppPath)
		}
	}
	wk.Hops = append(wk.Hops, h2)
	h3p, err := w.hopAmbientPlaintext()
	if err != nil {
		return nil, err
	}
	wk.Hops = append(wk.Hops, h3p)
	for _, f := range []func() (*Hop, error){w.hopXDS, w.hopRateLimit, w.hopRedis, w.hopRateLimitConfig, w.hopAmbientEdgeInbound} {
		h, err := f()
		if err != nil {
			return nil, err
		}
		wk.Hops = append(wk.Hops, h)
	}
	return wk, nil
}

// hopAmbientPlaintext (3p): httpbin's ztunnel refuses a plaintext connection from a pod outside the mesh
// (STRICT), which it would accept under PERMISSIVE.
func (w *World) hopAmbientPlaintext() (*Hop, error) {
	h := &Hop{ID: "3p", Title: "httpbin's ztunnel, inbound plaintext from a pod outside the mesh",
		Envoy: "istiod's authorizations for the httpbin workload (ztunnel's xDS)"}
	pods, err := w.St.PodsOf(AppNamespace, AppService)
	if err != nil || len(pods) == 0 {
		return nil, fmt.Errorf("no running pod of Deployment %s/%s in the state", AppNamespace, AppService)
	}
	wl := w.Ambient.Workloads[pods[0].Status.PodIP]
	if wl == nil || wl.TunnelProtocol != workloadapi.TunnelProtocol_HBONE {
		return h.fail(CauseNotInMesh, "httpbin's pod is no ztunnel workload: nothing enforces mutual TLS for it"), nil
	}
	svc, err := TypedOne[corev1.Service](w.St, "Service", AppNamespace, AppService)
	if err != nil {
		return nil, err
	}
	sp := servicePort(svc, AppPort)
	if sp == nil {
		return h.fail(CauseMissingPort, "Service %s/%s has no port %d", AppNamespace, AppService, AppPort), nil
	}
	target := sp.TargetPort.IntValue()
	allowed, _, why, err := authorize(w.Ambient.policiesOf(wl), inboundConn{port: uint32(target)})
	if err != nil {
		return nil, err
	}
	h.Call = fmt.Sprintf("plaintext TCP to the httpbin pod, port %d", target)
	if allowed {
		return h.fail(CausePlaintextAccepted, "accepted (%s): the mesh does not require mutual TLS", why), nil
	}
	h.Detail = append(h.Detail, "refused: "+why)
	h.OK = true
	return h, nil
}

// hopAmbientEdgeInbound (5): the edge traffic comes from outside the mesh, in plaintext. Unless istio-cni
// leaves the Envoy pod's inbound alone (ambient.istio.io/bypass-inbound-capture: "true", read by its node
// agent, istio/istio cni/pkg/nodeagent/net.go), ztunnel captures it and applies the Envoy workload's
// authorizations, which under STRICT refuse plaintext.
func (w *World) hopAmbientEdgeInbound() (*Hop, error) {
	h, pod, target, ok := w.edgeInbound("istio-cni's redirection of the Envoy pod; its ztunnel authorizations")
	if !ok {
		return h, nil
	}
	wl := w.Ambient.Workloads[pod.Status.PodIP]
	if wl == nil || wl.TunnelProtocol != workloadapi.TunnelProtocol_HBONE {
		h.Detail = append(h.Detail, "the Envoy pod is no ztunnel workload: nothing captures inbound traffic")
		h.OK = true
		return h, nil
	}
	if pod.Annotations[bypassInboundCapture] == "true" {
		h.Detail = append(h.Detail, bypassInboundCapture+": \"true\": istio-cni redirects only the pod's outbound traffic")
		h.OK = true
		return h, nil
	}
	allowed, cause, why, err := authorize(w.Ambient.policiesOf(wl), inboundConn{port: uint32(target)})
	if err != nil {
		return nil, err
	}
	if !allowed {
		return h.fail(cause, "captured by ztunnel (no %s on the pod), which refuses plaintext from outside the mesh: %s", bypassInboundCapture, why), nil
	}
	h.Detail = append(h.Detail, "captured by ztunnel, accepted: "+why)
	h.OK = true
	return h, nil
}
