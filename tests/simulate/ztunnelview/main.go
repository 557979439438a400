// Command ztunnelview reads istiod's workload API as ztunnel receives it and prints it as JSON.
//
// It connects to istiod's plaintext xDS port (--grpcAddr, 127.0.0.1 in the local control plane),
// presents itself as a ztunnel node (node ID "ztunnel~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local",
// as ztunnel's own xDS client does) and opens a delta ADS stream with wildcard subscriptions to the two
// types ztunnel asks for: type.googleapis.com/istio.workload.Address (workloads and services) and
// type.googleapis.com/istio.security.Authorization (pilot/pkg/xds/workload.go, pkg/workloadapi in
// istio/istio). It ACKs every response and stops when the stream has been quiet for -quiet.
//
//	ztunnelview -addr 127.0.0.1:15010 [-quiet 3s] [-timeout 60s]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

const (
	addressType       = "type.googleapis.com/istio.workload.Address"
	authorizationType = "type.googleapis.com/istio.security.Authorization"
	ztunnelNamespace  = "istio-system"
)

type workloadView struct {
	Namespace             string              `json:"namespace"`
	Name                  string              `json:"name"`
	UID                   string              `json:"uid"`
	Addresses             []string            `json:"addresses"`
	TunnelProtocol        string              `json:"tunnel_protocol"`
	ServiceAccount        string              `json:"service_account"`
	Services              map[string][]uint32 `json:"services"` // "namespace/hostname" -> service ports
	AuthorizationPolicies []string            `json:"authorization_policies"`
	Status                string              `json:"status"`
}

type serviceView struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Hostname  string   `json:"hostname"`
	Addresses []string `json:"addresses"` // the VIPs (ClusterIPs)
	Ports     []uint32 `json:"ports"`
}

type authorizationView struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Action    string `json:"action"`
	Scope     string `json:"scope"`
	Groups    int    `json:"groups"`
}

type view struct {
	Workloads      []workloadView      `json:"workloads"`
	Services       []serviceView       `json:"services"`
	Authorizations []authorizationView `json:"authorizations"`
}

func ip(b []byte) string {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return fmt.Sprintf("invalid:%x", b)
	}
	return a.String()
}

func node() *core.Node {
	meta, _ := structpb.NewStruct(map[string]any{"NAMESPACE": ztunnelNamespace, "CLUSTER_ID": "Kubernetes"})
	return &core.Node{
		Id:       fmt.Sprintf("ztunnel~127.0.0.1~ztunnel-teg-istio-view.%s~%s.svc.cluster.local", ztunnelNamespace, ztunnelNamespace),
		Metadata: meta,
	}
}

func fetch(ctx context.Context, addr string, quiet time.Duration) (map[string]map[string][]byte, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	for _, typeURL := range []string{addressType, authorizationType} {
		// An empty subscription list on the first request is a wildcard subscription (ztunnel's own).
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: node(), TypeUrl: typeURL}); err != nil {
			return nil, err
		}
	}
	resources := map[string]map[string][]byte{addressType: {}, authorizationType: {}}
	responses := make(chan *discovery.DeltaDiscoveryResponse)
	failed := make(chan error, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				failed <- err
				return
			}
			responses <- resp
		}
	}()
	seen := map[string]bool{}
	for {
		select {
		case resp := <-responses:
			seen[resp.TypeUrl] = true
			for _, r := range resp.Resources {
				resources[resp.TypeUrl][r.Name] = r.Resource.GetValue()
			}
			for _, name := range resp.RemovedResources {
				delete(resources[resp.TypeUrl], name)
			}
			if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce}); err != nil {
				return nil, err
			}
		case err := <-failed:
			return nil, err
		case <-time.After(quiet):
			if !seen[addressType] {
				return nil, fmt.Errorf("istiod at %s sent no %s in %s (is ambient enabled: PILOT_ENABLE_AMBIENT=true?)", addr, addressType, quiet)
			}
			return resources, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func render(resources map[string]map[string][]byte) (*view, error) {
	out := &view{Workloads: []workloadView{}, Services: []serviceView{}, Authorizations: []authorizationView{}}
	for name, raw := range resources[addressType] {
		var a workloadapi.Address
		if err := proto.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("address %s: %w", name, err)
		}
		if w := a.GetWorkload(); w != nil {
			wv := workloadView{Namespace: w.Namespace, Name: w.Name, UID: w.Uid, TunnelProtocol: w.TunnelProtocol.String(),
				ServiceAccount: w.ServiceAccount, Services: map[string][]uint32{}, Status: w.Status.String(),
				Addresses: []string{}, AuthorizationPolicies: append([]string{}, w.AuthorizationPolicies...)}
			for _, b := range w.Addresses {
				wv.Addresses = append(wv.Addresses, ip(b))
			}
			for svc, ports := range w.Services {
				for _, p := range ports.GetPorts() {
					wv.Services[svc] = append(wv.Services[svc], p.ServicePort)
				}
			}
			out.Workloads = append(out.Workloads, wv)
		}
		if s := a.GetService(); s != nil {
			sv := serviceView{Namespace: s.Namespace, Name: s.Name, Hostname: s.Hostname, Addresses: []string{}}
			for _, na := range s.Addresses {
				sv.Addresses = append(sv.Addresses, ip(na.Address))
			}
			for _, p := range s.Ports {
				sv.Ports = append(sv.Ports, p.ServicePort)
			}
			out.Services = append(out.Services, sv)
		}
	}
	for name, raw := range resources[authorizationType] {
		var a security.Authorization
		if err := proto.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("authorization %s: %w", name, err)
		}
		out.Authorizations = append(out.Authorizations, authorizationView{Namespace: a.Namespace, Name: a.Name,
			Action: a.Action.String(), Scope: a.Scope.String(), Groups: len(a.Groups)})
	}
	sort.Slice(out.Workloads, func(i, j int) bool { return out.Workloads[i].UID < out.Workloads[j].UID })
	sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Hostname < out.Services[j].Hostname })
	sort.Slice(out.Authorizations, func(i, j int) bool {
		return out.Authorizations[i].Namespace+"/"+out.Authorizations[i].Name < out.Authorizations[j].Namespace+"/"+out.Authorizations[j].Name
	})
	return out, nil
}

func main() {
	addr := flag.String("addr", "", "istiod's plaintext xDS address (host:port of --grpcAddr)")
	quiet := flag.Duration("quiet", 3*time.Second, "stop when istiod has sent nothing for this long")
	timeout := flag.Duration("timeout", 60*time.Second, "give up after this long")
	flag.Parse()
	if *addr == "" || !strings.Contains(*addr, ":") {
		fmt.Fprintln(os.Stderr, "ztunnelview: -addr host:port is required")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resources, err := fetch(ctx, *addr, *quiet)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ztunnelview:", err)
		os.Exit(1)
	}
	out, err := render(resources)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ztunnelview:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
