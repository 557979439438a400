package simulate

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Config is what one Envoy gets: its listeners, clusters, routes and endpoints.
type Config struct {
	Listeners []*listener.Listener
	Clusters  []*cluster.Cluster
	Routes    []*route.RouteConfiguration
	Endpoints []*endpoint.ClusterLoadAssignment
}

// Cluster finds a cluster by name.
func (c *Config) Cluster(name string) *cluster.Cluster {
	for _, cl := range c.Clusters {
		if cl.GetName() == name {
			return cl
		}
	}
	return nil
}

// LoadAssignment is a cluster's endpoints: inline, or the EDS assignment of that name.
func (c *Config) LoadAssignment(cl *cluster.Cluster) *endpoint.ClusterLoadAssignment {
	if cl.GetLoadAssignment() != nil {
		return cl.GetLoadAssignment()
	}
	name := cl.GetName()
	if sn := cl.GetEdsClusterConfig().GetServiceName(); sn != "" {
		name = sn
	}
	for _, cla := range c.Endpoints {
		if cla.GetClusterName() == name {
			return cla
		}
	}
	return nil
}

// fetch asks an ADS server (state of the world) for everything one node gets: clusters and listeners,
// then the endpoints of the EDS clusters and the route configurations the listeners name, and ACKs
// each response as Envoy does.
func fetch(ctx context.Context, conn grpc.ClientConnInterface, node *core.Node) (*Config, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = stream.CloseSend() }()
	send := func(typeURL string, names []string, version, nonce string) error {
		return stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: names,
			VersionInfo: version, ResponseNonce: nonce})
	}
	for _, typeURL := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		if err := send(typeURL, nil, "", ""); err != nil {
			return nil, err
		}
	}
	out := &Config{}
	got := map[string]bool{}
	var edsNames, rdsNames []string
	for !(got[resourcev3.ClusterType] && got[resourcev3.ListenerType] &&
		(len(edsNames) == 0 || got[resourcev3.EndpointType]) && (len(rdsNames) == 0 || got[resourcev3.RouteType])) {
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("xDS stream (got %v): %w", got, err)
		}
		typeURL := resp.GetTypeUrl()
		switch typeURL {
		case resourcev3.ClusterType:
			if out.Clusters, err = unmarshalAll[cluster.Cluster](resp); err != nil {
				return nil, err
			}
			if names := edsClusterNames(out.Clusters); !slices.Equal(names, edsNames) && len(names) > 0 {
				edsNames = names
				if err := send(resourcev3.EndpointType, edsNames, "", ""); err != nil {
					return nil, err
				}
			}
		case resourcev3.ListenerType:
			if out.Listeners, err = unmarshalAll[listener.Listener](resp); err != nil {
				return nil, err
			}
			if names := rdsRouteNames(out.Listeners); !slices.Equal(names, rdsNames) && len(names) > 0 {
				rdsNames = names
				if err := send(resourcev3.RouteType, rdsNames, "", ""); err != nil {
					return nil, err
				}
			}
		case resourcev3.EndpointType:
			if out.Endpoints, err = unmarshalAll[endpoint.ClusterLoadAssignment](resp); err != nil {
				return nil, err
			}
		case resourcev3.RouteType:
			if out.Routes, err = unmarshalAll[route.RouteConfiguration](resp); err != nil {
				return nil, err
			}
		default:
			continue
		}
		got[typeURL] = true
		names := map[string][]string{resourcev3.EndpointType: edsNames, resourcev3.RouteType: rdsNames}[typeURL]
		if err := send(typeURL, names, resp.GetVersionInfo(), resp.GetNonce()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// unmarshalAll decodes every resource of a response as T.
func unmarshalAll[T any, P interface {
	*T
	proto.Message
}](resp *discovery.DiscoveryResponse) ([]P, error) {
	out := make([]P, 0, len(resp.GetResources()))
	for _, res := range resp.GetResources() {
		msg := P(new(T))
		if err := res.UnmarshalTo(msg); err != nil {
			return nil, fmt.Errorf("%s: %w", resp.GetTypeUrl(), err)
		}
		out = append(out, msg)
	}
	return out, nil
}

func edsClusterNames(clusters []*cluster.Cluster) []string {
	var names []string
	for _, cl := range clusters {
		if cl.GetType() == cluster.Cluster_EDS {
			name := cl.GetName()
			if sn := cl.GetEdsClusterConfig().GetServiceName(); sn != "" {
				name = sn
			}
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return slices.Compact(names)
}

func rdsRouteNames(listeners []*listener.Listener) []string {
	var names []string
	for _, l := range listeners {
		chains := slices.Clone(l.GetFilterChains())
		if l.GetDefaultFilterChain() != nil {
			chains = append(chains, l.GetDefaultFilterChain())
		}
		for _, fc := range chains {
			if m := httpConnectionManager(fc); m != nil && m.GetRds() != nil {
				names = append(names, m.GetRds().GetRouteConfigName())
			}
		}
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// httpConnectionManager is the filter chain's HTTP connection manager, or nil.
func httpConnectionManager(fc *listener.FilterChain) *hcm.HttpConnectionManager {
	for _, f := range fc.GetFilters() {
		if f.GetName() != "envoy.filters.network.http_connection_manager" {
			continue
		}
		m := &hcm.HttpConnectionManager{}
		if err := f.GetTypedConfig().UnmarshalTo(m); err == nil {
			return m
		}
	}
	return nil
}

// MarshalConfig writes a Config as a list of protojson Any values (the live capture files).
func MarshalConfig(c *Config) ([]byte, error) {
	var msgs []proto.Message
	for _, l := range c.Listeners {
		msgs = append(msgs, l)
	}
	for _, cl := range c.Clusters {
		msgs = append(msgs, cl)
	}
	for _, r := range c.Routes {
		msgs = append(msgs, r)
	}
	for _, e := range c.Endpoints {
		msgs = append(msgs, e)
	}
	list := &discovery.DiscoveryResponse{}
	for _, m := range msgs {
		a, err := anypb.New(m)
		if err != nil {
			return nil, err
		}
		list.Resources = append(list.Resources, a)
	}
	return protojson.Marshal(list)
}

// UnmarshalConfig reads what MarshalConfig wrote.
func UnmarshalConfig(raw []byte) (*Config, error) {
	list := &discovery.DiscoveryResponse{}
	if err := protojson.Unmarshal(raw, list); err != nil {
		return nil, err
	}
	out := &Config{}
	for _, a := range list.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, err
		}
		switch v := m.(type) {
		case *listener.Listener:
			out.Listeners = append(out.Listeners, v)
		case *cluster.Cluster:
			out.Clusters = append(out.Clusters, v)
		case *route.RouteConfiguration:
			out.Routes = append(out.Routes, v)
		case *endpoint.ClusterLoadAssignment:
			out.Endpoints = append(out.Endpoints, v)
		}
	}
	return out, nil
}
