// Package simulate walks one request through the configuration that Envoy Gateway and istiod generate
// for the cluster state playbooks/site.yml leaves (docs/traffic-simulation.md).
//
// The module path puts this package under github.com/envoyproxy/gateway: Go allows importing a
// module's internal packages from any package whose import path starts with the module's path, and
// Envoy Gateway's translator lives in internal packages. This is how the suite runs the very
// translation the controller runs, instead of `egctl x translate`, which hard-codes Service routing.
package simulate

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// State is what tests/simulate/run.py dumps after a site.yml run: the cluster's objects and what the
// controllers are configured with.
type State struct {
	Routing string `json:"routing"`
	// MeshMode is teg_istio_mesh_mode of the run: sidecar (the default) or ambient.
	MeshMode     string            `json:"mesh_mode,omitempty"`
	Controllers  string            `json:"controllers"`
	Versions     map[string]string `json:"versions"`
	EnvoyGateway json.RawMessage   `json:"envoy_gateway"`
	IstioChart   IstioChart        `json:"istio_chart"`
	Objects      []map[string]any  `json:"objects"`
	Live         *Live             `json:"live,omitempty"`
	// AdmittedBeforeInjection lists pods (namespace/name) created before any injector webhook selected them and
	// not recreated since: what a pod is without the restart of teg_restart (set by an ablation, never dumped).
	AdmittedBeforeInjection []string `json:"admitted_before_injection,omitempty"`
}

// IstioChart is the real istiod chart of the pinned module, rendered with the values the real istiod
// of CONTROLLERS=real gets (tests/localcp/controllers.py).
type IstioChart struct {
	InjectorConfig       string         `json:"injector_config"`
	InjectorValues       string         `json:"injector_values"`
	Mesh                 string         `json:"mesh"`
	Webhook              map[string]any `json:"webhook"`
	ModuleVersion        string         `json:"module_version"`
	CompatibilityVersion string         `json:"compatibility_version"`
	// CompatibilityEnv is the pilot env of that compatibility profile, which run.py gives the suite's process;
	// empty where the deployed minor is the module's own (ModuleMinor, its VERSION file).
	CompatibilityEnv map[string]string `json:"compatibility_env"`
	ModuleMinor      string            `json:"module_minor"`
	// PreviousProfileEnv is the pilot env of the profile of the minor before the module's own: the flags that would
	// turn the module's own minor's behaviour changes off.
	PreviousProfileEnv map[string]string `json:"previous_profile_env"`
}

// Live says where the real controllers of a CONTROLLERS=real cluster serve xDS.
type Live struct {
	IstiodGRPC      string            `json:"istiod_grpc"`
	EnvoyGatewayXDS string            `json:"envoy_gateway_xds"`
	EnvoyClientTLS  map[string]string `json:"envoy_client_tls"`
}

// LoadState reads a state file.
func LoadState(path string) (*State, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := &State{}
	if err := yaml.Unmarshal(raw, st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Routing == "" || len(st.Objects) == 0 {
		return nil, fmt.Errorf("%s: no routing mode or no objects: not a state dumped by run.py", path)
	}
	return st, nil
}

// Clone is a deep copy, for ablations that edit the state.
func (s *State) Clone() *State {
	raw, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	out := &State{}
	if err := json.Unmarshal(raw, out); err != nil {
		panic(err)
	}
	return out
}

// Find returns the objects of a kind (and namespace and name, when not empty), as stored.
func (s *State) Find(kind, namespace, name string) []map[string]any {
	var out []map[string]any
	for _, obj := range s.Objects {
		u := unstructured.Unstructured{Object: obj}
		if u.GetKind() != kind || (namespace != "" && u.GetNamespace() != namespace) || (name != "" && u.GetName() != name) {
			continue
		}
		out = append(out, obj)
	}
	return out
}

// One returns the single object of that kind, namespace and name, or an error naming it.
func (s *State) One(kind, namespace, name string) (map[string]any, error) {
	found := s.Find(kind, namespace, name)
	if len(found) != 1 {
		return nil, fmt.Errorf("the state has %d %s %s/%s, want 1", len(found), kind, namespace, name)
	}
	return found[0], nil
}

// Remove deletes the objects of a kind, namespace and name; it returns how many.
func (s *State) Remove(kind, namespace, name string) int {
	before := len(s.Objects)
	s.Objects = slices.DeleteFunc(s.Objects, func(obj map[string]any) bool {
		u := unstructured.Unstructured{Object: obj}
		return u.GetKind() == kind && (namespace == "" || u.GetNamespace() == namespace) && (name == "" || u.GetName() == name)
	})
	return before - len(s.Objects)
}

// Typed converts every object of a kind into T.
func Typed[T any](s *State, kind, namespace string) ([]*T, error) {
	var out []*T
	for _, obj := range s.Find(kind, namespace, "") {
		typed := new(T)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, typed); err != nil {
			return nil, fmt.Errorf("%s %s: %w", kind, (&unstructured.Unstructured{Object: obj}).GetName(), err)
		}
		out = append(out, typed)
	}
	return out, nil
}

// TypedOne converts the single object of that kind, namespace and name into T.
func TypedOne[T any](s *State, kind, namespace, name string) (*T, error) {
	obj, err := s.One(kind, namespace, name)
	if err != nil {
		return nil, err
	}
	typed := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, typed); err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", kind, namespace, name, err)
	}
	return typed, nil
}

// Put replaces the object of the same kind, namespace and name (or adds it).
func (s *State) Put(obj any) error {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	u := unstructured.Unstructured{Object: raw}
	if u.GetKind() == "" {
		return fmt.Errorf("object %s has no kind", u.GetName())
	}
	s.Remove(u.GetKind(), u.GetNamespace(), u.GetName())
	s.Objects = append(s.Objects, raw)
	return nil
}

// RunningPods are the pods that stay: scheduled, with an IP, not being deleted.
func (s *State) RunningPods(namespace string) ([]*corev1.Pod, error) {
	pods, err := Typed[corev1.Pod](s, "Pod", namespace)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(pods, func(p *corev1.Pod) bool {
		return p.DeletionTimestamp != nil || p.Status.PodIP == ""
	}), nil
}

// PodsOf are the running pods whose name starts with the Deployment's name and which carry its
// selector's labels.
func (s *State) PodsOf(namespace, deployment string) ([]*corev1.Pod, error) {
	pods, err := s.RunningPods(namespace)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(pods, func(p *corev1.Pod) bool {
		return !strings.HasPrefix(p.Name, deployment+"-")
	}), nil
}
