package simulate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"slices"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
)

// LiveConfigs is what the running controllers of a CONTROLLERS=real cluster served: Envoy Gateway to
// the Envoy pod of Gateway apps, istiod to each sidecar on the walk.
type LiveConfigs struct {
	EnvoyGateway *Config
	Sidecars     map[string]*Config // by namespace/name of the pod
}

type liveFile struct {
	EnvoyGateway json.RawMessage            `json:"envoy_gateway"`
	Sidecars     map[string]json.RawMessage `json:"sidecars"`
}

// CaptureLive asks the running Envoy Gateway, as the Envoy pod (its client certificate is the `envoy`
// Secret certgen wrote; its node cluster is the Gateway's IR key), and the running istiod, as each
// meshed pod's sidecar, for their configuration.
func CaptureLive(ctx context.Context, w *World) (*LiveConfigs, error) {
	live := w.St.Live
	if live == nil {
		return nil, fmt.Errorf("the state has no live section: it was not dumped from a CONTROLLERS=real cluster")
	}
	out := &LiveConfigs{Sidecars: map[string]*Config{}}
	creds, err := envoyClientCredentials(live.EnvoyClientTLS)
	if err != nil {
		return nil, err
	}
	egConn, err := grpc.NewClient("passthrough:///"+live.EnvoyGatewayXDS, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer egConn.Close()
	pod := w.envoyPod()
	node := &core.Node{Id: pod.Name, Cluster: envoyArg(pod, "--service-cluster", w.Gateway.Key)}
	if out.EnvoyGateway, err = fetch(ctx, egConn, node); err != nil {
		return nil, fmt.Errorf("Envoy Gateway xDS at %s: %w", live.EnvoyGatewayXDS, err)
	}
	istiod, err := grpc.NewClient("passthrough:///"+live.IstiodGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer istiod.Close()
	for _, p := range w.Mesh.Pods {
		if !HasSidecar(p) {
			continue
		}
		node, err := SidecarNode(p, w.Mesh.MeshConfig)
		if err != nil {
			return nil, err
		}
		cfg, err := fetch(ctx, istiod, node)
		if err != nil {
			return nil, fmt.Errorf("istiod xDS at %s for %s/%s: %w", live.IstiodGRPC, p.Namespace, p.Name, err)
		}
		out.Sidecars[p.Namespace+"/"+p.Name] = cfg
	}
	return out, nil
}

// envoyArg is the value of one argument of the Envoy container, as Envoy Gateway renders it (the node
// cluster Envoy presents is its --service-cluster), or a fallback.
func envoyArg(pod *corev1.Pod, name, fallback string) string {
	for _, c := range pod.Spec.Containers {
		if c.Name != "envoy" {
			continue
		}
		if i := slices.Index(c.Args, name); i >= 0 && i+1 < len(c.Args) {
			return c.Args[i+1]
		}
	}
	return fallback
}

func envoyClientCredentials(secret map[string]string) (credentials.TransportCredentials, error) {
	decode := func(key string) ([]byte, error) {
		v, err := base64.StdEncoding.DecodeString(secret[key])
		if err != nil || len(v) == 0 {
			return nil, fmt.Errorf("Secret envoy has no usable %s", key)
		}
		return v, nil
	}
	certPEM, err := decode("tls.crt")
	if err != nil {
		return nil, err
	}
	keyPEM, err := decode("tls.key")
	if err != nil {
		return nil, err
	}
	caPEM, err := decode("ca.crt")
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	// The Envoy bootstrap connects to envoy-gateway.<namespace>.svc.cluster.local; certgen's server
	// certificate names it.
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool,
		ServerName: "envoy-gateway." + TEGNamespace + ".svc.cluster.local", MinVersion: tls.VersionTLS12}), nil
}

// SaveLive writes a capture.
func SaveLive(path string, live *LiveConfigs) error {
	f := liveFile{Sidecars: map[string]json.RawMessage{}}
	var err error
	if f.EnvoyGateway, err = MarshalConfig(live.EnvoyGateway); err != nil {
		return err
	}
	for name, cfg := range live.Sidecars {
		if f.Sidecars[name], err = MarshalConfig(cfg); err != nil {
			return err
		}
	}
	raw, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

// LoadLive reads a capture.
func LoadLive(path string) (*LiveConfigs, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := liveFile{}
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, err
	}
	out := &LiveConfigs{Sidecars: map[string]*Config{}}
	if out.EnvoyGateway, err = UnmarshalConfig(f.EnvoyGateway); err != nil {
		return nil, err
	}
	for name, rawCfg := range f.Sidecars {
		if out.Sidecars[name], err = UnmarshalConfig(rawCfg); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// UseLive makes the walk use a capture instead of the in-process configuration.
func (w *World) UseLive(live *LiveConfigs) {
	w.Live = live
	w.Mesh.Live = live.Sidecars
}
