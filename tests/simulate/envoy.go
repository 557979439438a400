package simulate

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"istio.io/istio/pilot/pkg/simulation"
)

// Match is where one Envoy sends a request: the listener, filter chain, route configuration, virtual
// host, route and cluster Envoy's own matching picks (Istio's simulation package, pilot/pkg/simulation),
// then the endpoint of that cluster, the rewritten Host and path, and how the connection upstream is
// secured.
type Match struct {
	simulation.Result
	Route        *route.Route
	Upstream     string // host:port the cluster sends to
	UpstreamName string // what that address is, in words (filled by the walk)
	Host, Path   string // after the route's rewrites
	TLS          string // ISTIO_MUTUAL, TLS, plaintext
	ALPN         []string
	HTTP2        bool // the cluster speaks HTTP/2 upstream
}

// Simulate matches a call against one Envoy's configuration the way Envoy does, and follows the
// matched route to its cluster and endpoint. original is the connection's original destination
// (host:port), which a passthrough cluster sends to.
func Simulate(cfg *Config, call simulation.Call) (m Match, err error) {
	defer func() {
		if r := recover(); r != nil { // the simulation fails its test on configuration it cannot read
			err = fmt.Errorf("simulation could not read the configuration: %v", r)
		}
	}()
	sim := &simulation.Simulation{Listeners: cfg.Listeners, Clusters: cfg.Clusters, Routes: cfg.Routes}
	m.Result = sim.Run(call)
	call = call.FillDefaults()
	m.Host, m.Path = call.HostHeader, call.Path
	if m.Error != nil {
		return m, nil
	}
	if m.VirtualHostMatched != "" {
		m.Route = findRoute(cfg, m.Result, call.Path)
		if m.Route == nil {
			return m, fmt.Errorf("route %q of virtual host %q not found", m.RouteMatched, m.VirtualHostMatched)
		}
		action := m.Route.GetRoute()
		if action == nil {
			return m, nil
		}
		if lit := action.GetHostRewriteLiteral(); lit != "" {
			m.Host = lit
		}
		m.Path = rewritePath(m.Route, call.Path)
	}
	cl := cfg.Cluster(m.ClusterMatched)
	if cl == nil {
		m.Error = fmt.Errorf("%w: %q is not in the configuration", errClusterNotFound, m.ClusterMatched)
		return m, nil
	}
	m.HTTP2 = speaksHTTP2(cl)
	var meta *core.Metadata
	switch cl.GetType() {
	case cluster.Cluster_ORIGINAL_DST:
		m.Upstream = net.JoinHostPort(call.Address, strconv.Itoa(call.Port))
	default:
		lb := firstEndpoint(cfg.LoadAssignment(cl))
		if lb == nil {
			m.Error = fmt.Errorf("%w: cluster %q", errNoEndpoint, cl.GetName())
			return m, nil
		}
		sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
		m.Upstream = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
		meta = lb.GetMetadata()
	}
	m.TLS, m.ALPN, err = upstreamTLS(cl, meta)
	return m, err
}

// findRoute is the route the simulation matched: by name in the matched virtual host, or (routes
// without a name) the first whose path matches, as the simulation decides.
func findRoute(cfg *Config, res simulation.Result, path string) *route.Route {
	for _, rc := range cfg.Routes {
		if res.RouteConfigMatched != "" && rc.GetName() != res.RouteConfigMatched {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			if vh.GetName() != res.VirtualHostMatched {
				continue
			}
			for _, r := range vh.GetRoutes() {
				if pathMatches(r.GetMatch(), path) && (res.RouteMatched == "" || r.GetName() == res.RouteMatched) {
					return r
				}
			}
		}
	}
	// An inline route configuration (no RDS): the matched filter chain's HTTP connection manager holds it.
	for _, l := range cfg.Listeners {
		if l.GetName() != res.ListenerMatched {
			continue
		}
		chains := append(slices.Clone(l.GetFilterChains()), l.GetDefaultFilterChain())
		for _, fc := range chains {
			if fc == nil || fc.GetName() != res.FilterChainMatched {
				continue
			}
			for _, vh := range httpConnectionManager(fc).GetRouteConfig().GetVirtualHosts() {
				if vh.GetName() != res.VirtualHostMatched {
					continue
				}
				for _, r := range vh.GetRoutes() {
					if pathMatches(r.GetMatch(), path) {
						return r
					}
				}
			}
		}
	}
	for _, rc := range cfg.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			if vh.GetName() == res.VirtualHostMatched {
				for _, r := range vh.GetRoutes() {
					if pathMatches(r.GetMatch(), path) {
						return r
					}
				}
			}
		}
	}
	return nil
}

func pathMatches(m *route.RouteMatch, path string) bool {
	switch {
	case m.GetPrefix() != "" || m.GetPathSpecifier() == nil:
		return strings.HasPrefix(path, m.GetPrefix())
	case m.GetPath() != "":
		return path == m.GetPath()
	case m.GetPathSeparatedPrefix() != "":
		return strings.HasPrefix(path, m.GetPathSeparatedPrefix())
	case m.GetSafeRegex() != nil:
		re, err := regexp.Compile(m.GetSafeRegex().GetRegex())
		return err == nil && re.MatchString(path)
	}
	return false
}

// rewritePath applies a route's prefix rewrite or regex rewrite as Envoy does.
func rewritePath(r *route.Route, path string) string {
	action := r.GetRoute()
	if pr := action.GetPrefixRewrite(); pr != "" {
		prefix := r.GetMatch().GetPrefix()
		if prefix == "" {
			prefix = r.GetMatch().GetPathSeparatedPrefix()
		}
		if prefix == "" && r.GetMatch().GetPath() != "" {
			return pr
		}
		return pr + strings.TrimPrefix(path, prefix)
	}
	if rr := action.GetRegexRewrite(); rr != nil {
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			return path
		}
		// Envoy's substitution names groups \1; Go's ${1}.
		sub := regexp.MustCompile(`\\(\d)`).ReplaceAllString(rr.GetSubstitution(), `$${$1}`)
		return re.ReplaceAllString(path, sub)
	}
	return path
}

func firstEndpoint(cla *endpoint.ClusterLoadAssignment) *endpoint.LbEndpoint {
	for _, loc := range cla.GetEndpoints() {
		for _, lb := range loc.GetLbEndpoints() {
			return lb
		}
	}
	return nil
}

// upstreamTLS is how the cluster secures the connection to that endpoint: the transport socket
// match whose criteria the endpoint's metadata meets (Istio's auto mTLS), or the cluster's socket.
func upstreamTLS(cl *cluster.Cluster, meta *core.Metadata) (string, []string, error) {
	socket := cl.GetTransportSocket()
	if matches := cl.GetTransportSocketMatches(); len(matches) > 0 {
		socket = nil
		labels := meta.GetFilterMetadata()["envoy.transport_socket_match"].GetFields()
		for _, tsm := range matches {
			ok := true
			for k, v := range tsm.GetMatch().GetFields() {
				if got, found := labels[k]; !found || got.GetStringValue() != v.GetStringValue() {
					ok = false
					break
				}
			}
			if ok {
				socket = tsm.GetTransportSocket()
				break
			}
		}
	}
	if socket == nil || socket.GetTypedConfig() == nil || strings.HasSuffix(socket.GetName(), "raw_buffer") {
		return "plaintext", nil, nil
	}
	up := &tlsv3.UpstreamTlsContext{}
	if err := socket.GetTypedConfig().UnmarshalTo(up); err != nil {
		return "", nil, fmt.Errorf("cluster %s: transport socket %s: %w", cl.GetName(), socket.GetName(), err)
	}
	common := up.GetCommonTlsContext()
	sds := common.GetTlsCertificateSdsSecretConfigs()
	validation := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName()
	if len(sds) > 0 && sds[0].GetName() == "default" && validation == "ROOTCA" {
		return "ISTIO_MUTUAL", common.GetAlpnProtocols(), nil
	}
	return "TLS", common.GetAlpnProtocols(), nil
}

func speaksHTTP2(cl *cluster.Cluster) bool {
	if cl.GetHttp2ProtocolOptions() != nil {
		return true
	}
	raw := cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if raw == nil {
		return false
	}
	opts := &httpv3.HttpProtocolOptions{}
	if err := raw.UnmarshalTo(opts); err != nil {
		return false
	}
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// What Simulate finds past the simulation's matching: a route to a cluster CDS does not hold (Envoy answers
// 503 with response flag NC) or to a cluster without endpoint (503 UH).
var (
	errClusterNotFound = errors.New("cluster not found")
	errNoEndpoint      = errors.New("no endpoint")
)

// errorReason is the simulation's error in the words of the configuration.
func errorReason(err error) string {
	switch {
	case errors.Is(err, simulation.ErrNoFilterChain):
		return "no filter chain accepts it"
	case errors.Is(err, simulation.ErrProtocolError):
		return "the matched filter chain is an HTTP connection manager, which cannot read TLS"
	case errors.Is(err, simulation.ErrMTLSError):
		return "the filter chain requires Istio mTLS"
	case errors.Is(err, simulation.ErrTLSError):
		return "the filter chain terminates TLS and got plaintext"
	}
	return err.Error()
}

// hostPort splits host:port.
func hostPort(addr string) (string, int) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	p, _ := strconv.Atoi(port)
	return host, p
}
