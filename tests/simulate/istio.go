package simulate

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/bootstrap"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/kube/inject"
)

// istioKinds are the Istio configuration kinds the state may hold; they go to istiod's config store.
var istioKinds = []string{"VirtualService", "DestinationRule", "ServiceEntry", "Sidecar", "PeerAuthentication",
	"AuthorizationPolicy"}

// Mesh is istiod's view of the state: every pod as istiod's injector leaves it, and a discovery server
// (Istio's own test server, pilot/test/xds) that generates each sidecar's configuration.
type Mesh struct {
	MeshConfig *meshconfig.MeshConfig
	// Pods are the running pods, injected where the injector webhook selects them (or as the real
	// istiod injected them).
	Pods []*corev1.Pod
	// Injection tells, per namespace/name of a pod, why it has or has no sidecar.
	Injection map[string]string
	Fake      *xds.FakeDiscoveryServer
	// Redirected lists the pods (namespace/name) given the redirection annotation of istio-cni's node agent.
	Redirected []string
	// Live, when set, holds what the running istiod served each sidecar (namespace/name of the pod).
	Live map[string]*Config

	injector       inject.Config
	values         inject.ValuesConfig
	admittedBefore []string // State.AdmittedBeforeInjection
	webhook        *admissionv1.MutatingWebhookConfiguration
}

// NewMesh injects the state's pods and starts a discovery server on the state.
func NewMesh(t *testing.T, st *State) (*Mesh, error) {
	m := &Mesh{Injection: map[string]string{}, admittedBefore: st.AdmittedBeforeInjection}
	var err error
	if m.MeshConfig, err = mesh.ApplyMeshConfig(st.IstioChart.Mesh, mesh.DefaultMeshConfig()); err != nil {
		return nil, fmt.Errorf("mesh configuration of the chart: %w", err)
	}
	if m.injector, err = inject.UnmarshalConfig([]byte(st.IstioChart.InjectorConfig)); err != nil {
		return nil, err
	}
	if m.values, err = inject.NewValuesConfig(st.IstioChart.InjectorValues); err != nil {
		return nil, err
	}
	m.webhook = &admissionv1.MutatingWebhookConfiguration{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(st.IstioChart.Webhook, m.webhook); err != nil {
		return nil, fmt.Errorf("injector webhook of the chart: %w", err)
	}

	namespaces, err := Typed[corev1.Namespace](st, "Namespace", "")
	if err != nil {
		return nil, err
	}
	byName := map[string]*corev1.Namespace{}
	objects := []runtime.Object{}
	for _, ns := range namespaces {
		byName[ns.Name] = ns
		objects = append(objects, ns)
	}
	pods, err := st.RunningPods("")
	if err != nil {
		return nil, err
	}
	cniAgent := cniAgentRuns(st)
	for _, pod := range pods {
		injected, why, err := m.inject(pod, byName[pod.Namespace])
		if err != nil {
			return nil, err
		}
		m.Injection[pod.Namespace+"/"+pod.Name] = why
		if cniAgent {
			var redirected bool
			if injected, redirected = redirect(injected, byName[pod.Namespace]); redirected {
				m.Redirected = append(m.Redirected, pod.Namespace+"/"+workloadName(pod))
			}
		}
		m.Pods = append(m.Pods, injected)
		objects = append(objects, injected)
	}
	services, err := Typed[corev1.Service](st, "Service", "")
	if err != nil {
		return nil, err
	}
	for _, s := range services {
		objects = append(objects, s)
	}
	slicesOf, err := Typed[discoveryv1.EndpointSlice](st, "EndpointSlice", "")
	if err != nil {
		return nil, err
	}
	for _, s := range slicesOf {
		objects = append(objects, s)
	}
	if st.MeshMode == "ambient" {
		policies, err := ambientPolicies(st)
		if err != nil {
			return nil, err
		}
		objects = append(objects, policies...)
	}
	var configs []string
	for _, kind := range istioKinds {
		for _, obj := range st.Find(kind, "", "") {
			clean := map[string]any{"apiVersion": obj["apiVersion"], "kind": obj["kind"], "spec": obj["spec"]}
			meta, _ := obj["metadata"].(map[string]any)
			clean["metadata"] = map[string]any{"name": meta["name"], "namespace": meta["namespace"],
				"labels": meta["labels"], "annotations": meta["annotations"]}
			raw, err := yaml.Marshal(clean)
			if err != nil {
				return nil, err
			}
			configs = append(configs, string(raw))
		}
	}
	m.Fake = xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		KubernetesObjects: objects,
		ConfigString:      strings.Join(configs, "\n---\n"),
		MeshConfig:        m.MeshConfig,
	})
	return m, nil
}

// HasSidecar tells whether a pod carries Istio's proxy (as a container or a native sidecar).
func HasSidecar(pod *corev1.Pod) bool {
	return sidecarContainer(pod) != nil
}

func sidecarContainer(pod *corev1.Pod) *corev1.Container {
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			if list[i].Name == "istio-proxy" {
				return &list[i]
			}
		}
	}
	return nil
}

// inject returns the pod as the injector webhook leaves it: a pod istiod already injected (the real
// controllers) stays as it is; otherwise, when one of the chart's webhooks selects the pod (its
// namespaceSelector and objectSelector), Istio's injector runs the chart's template on it.
func (m *Mesh) inject(pod *corev1.Pod, ns *corev1.Namespace) (*corev1.Pod, string, error) {
	if _, done := pod.Annotations["sidecar.istio.io/status"]; done {
		return pod, "injected by the running istiod", nil
	}
	if ns == nil {
		return pod, "namespace not in the state", nil
	}
	hook, onCreateOnly := "", false
	for _, wh := range m.webhook.Webhooks {
		if selects(wh.NamespaceSelector, ns.Labels) && selects(wh.ObjectSelector, pod.Labels) {
			hook, onCreateOnly = wh.Name, admitsOnlyCreate(wh)
			break
		}
	}
	if hook == "" {
		return pod, fmt.Sprintf("no injector webhook selects it (namespace labels %v)", ns.Labels), nil
	}
	if onCreateOnly && slices.Contains(m.admittedBefore, pod.Namespace+"/"+pod.Name) {
		return pod, fmt.Sprintf("created before webhook %s selected it, which acts only when a pod is created "+
			"(its rules: CREATE), and not restarted since", hook), nil
	}
	in := pod.DeepCopy()
	in.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	out, err := inject.IntoObject(nil, m.injector.Templates, m.values, "default", m.MeshConfig, in, func(string) {})
	if err != nil {
		return nil, "", fmt.Errorf("injecting pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	injected := out.(*corev1.Pod)
	injected.Status = pod.Status
	if !HasSidecar(injected) {
		return injected, "webhook " + hook + " selects it, the injector declined", nil
	}
	return injected, "injected (webhook " + hook + ")", nil
}

// admitsOnlyCreate tells whether the webhook's rules send it pods only when they are created (the chart's
// injector webhook: operations [CREATE] on pods), so that a running pod is never injected.
func admitsOnlyCreate(wh admissionv1.MutatingWebhook) bool {
	for _, rule := range wh.Rules {
		for _, op := range rule.Operations {
			if op != admissionv1.Create {
				return false
			}
		}
	}
	return len(wh.Rules) > 0
}

func selects(sel *metav1.LabelSelector, set map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(set))
}

// Pod finds a pod of the mesh by namespace and name.
func (m *Mesh) Pod(namespace, name string) *corev1.Pod {
	for _, p := range m.Pods {
		if p.Namespace == namespace && p.Name == name {
			return p
		}
	}
	return nil
}

// IstioVersion is the version of the injected proxy image (the tag of istio-proxy's image), which
// pilot-agent reports as ISTIO_VERSION.
func IstioVersion(pod *corev1.Pod) string {
	c := sidecarContainer(pod)
	if c == nil {
		return ""
	}
	image := c.Image
	if i := strings.LastIndex(image, ":"); i >= 0 && !strings.Contains(image[i:], "/") {
		return strings.TrimSuffix(image[i+1:], "-distroless")
	}
	return ""
}

// SidecarNode is the xDS node the pod's sidecar presents to istiod: the id and metadata pilot-agent
// builds from the container's environment (ISTIO_META_*, resolved from the pod as the downward API
// would), the pod's labels and annotations, its IP and service account (pkg/bootstrap).
func SidecarNode(pod *corev1.Pod, meshCfg *meshconfig.MeshConfig) (*core.Node, error) {
	c := sidecarContainer(pod)
	if c == nil {
		return nil, fmt.Errorf("pod %s/%s has no istio-proxy", pod.Namespace, pod.Name)
	}
	podLabels := map[string]string{}
	for k, v := range pod.Labels {
		if k != "pod-template-hash" {
			podLabels[k] = v
		}
	}
	labelJSON, err := json.Marshal(podLabels)
	if err != nil {
		return nil, err
	}
	envs := []string{"ISTIO_METAJSON_LABELS=" + string(labelJSON)}
	for _, e := range c.Env {
		value := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			value = fieldRef(pod, e.ValueFrom.FieldRef.FieldPath)
		}
		envs = append(envs, e.Name+"="+value)
	}
	version := IstioVersion(pod)
	if version != "" {
		envs = append(envs, "ISTIO_META_ISTIO_VERSION="+version)
	}
	id := fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", pod.Status.PodIP, pod.Name, pod.Namespace, pod.Namespace)
	node, err := bootstrap.GetNodeMetaData(bootstrap.MetadataOptions{
		Envs: envs, InstanceIPs: []string{pod.Status.PodIP}, ID: id, ProxyConfig: meshCfg.GetDefaultConfig(),
	})
	if err != nil {
		return nil, err
	}
	node.Metadata.Annotations = pod.Annotations
	typed, err := json.Marshal(node.Metadata)
	if err != nil {
		return nil, err
	}
	meta := map[string]any{}
	for k, v := range node.RawMetadata {
		meta[k] = v
	}
	var typedMap map[string]any
	if err := json.Unmarshal(typed, &typedMap); err != nil {
		return nil, err
	}
	for k, v := range typedMap {
		meta[k] = v
	}
	st, err := structpb.NewStruct(meta)
	if err != nil {
		return nil, err
	}
	return &core.Node{Id: id, Cluster: podLabels["app"] + "." + pod.Namespace, Metadata: st}, nil
}

func fieldRef(pod *corev1.Pod, path string) string {
	switch path {
	case "metadata.name":
		return pod.Name
	case "metadata.namespace":
		return pod.Namespace
	case "status.podIP", "status.podIPs":
		return pod.Status.PodIP
	case "status.hostIP":
		return pod.Status.HostIP
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName
	case "spec.nodeName":
		return pod.Spec.NodeName
	}
	for _, prefix := range []string{"metadata.labels['", "metadata.annotations['"} {
		if strings.HasPrefix(path, prefix) && strings.HasSuffix(path, "']") {
			key := strings.TrimSuffix(strings.TrimPrefix(path, prefix), "']")
			if strings.HasPrefix(prefix, "metadata.labels") {
				return pod.Labels[key]
			}
			return pod.Annotations[key]
		}
	}
	return ""
}

// SidecarConfig asks the in-process discovery server, over ADS like a sidecar does, for the pod's
// configuration.
func (m *Mesh) SidecarConfig(pod *corev1.Pod) (*Config, error) {
	if m.Live != nil {
		if cfg := m.Live[pod.Namespace+"/"+pod.Name]; cfg != nil {
			return cfg, nil
		}
		return nil, fmt.Errorf("the live capture has no configuration for the sidecar of %s/%s", pod.Namespace, pod.Name)
	}
	node, err := SidecarNode(pod, m.MeshConfig)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///istiod", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return m.Fake.BufListener.Dial() }))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return fetch(context.Background(), conn, node)
}

// InterceptedInboundPorts is the inbound port list istio-init (or the CNI plugin) is given: the value
// of istio-iptables' -b (`*` for every port, "" for none).
func InterceptedInboundPorts(pod *corev1.Pod) (string, error) {
	for _, c := range pod.Spec.InitContainers {
		if c.Name != "istio-init" {
			continue
		}
		args := slices.Clone(c.Args)
		if i := slices.Index(args, "-b"); i >= 0 && i+1 < len(args) {
			return strings.Trim(args[i+1], `"'`), nil
		}
		return "", fmt.Errorf("istio-init of %s/%s has no -b argument: %v", pod.Namespace, pod.Name, args)
	}
	if v, ok := pod.Annotations["traffic.sidecar.istio.io/includeInboundPorts"]; ok {
		return v, nil // the CNI plugin reads the annotation the injector sets
	}
	return "", fmt.Errorf("pod %s/%s has no istio-init container and no includeInboundPorts annotation", pod.Namespace, pod.Name)
}

// PodByIP finds the pod with that IP.
func (m *Mesh) PodByIP(ip string) *corev1.Pod {
	for _, p := range m.Pods {
		if p.Status.PodIP == ip {
			return p
		}
	}
	return nil
}

// sortedKeys is a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
