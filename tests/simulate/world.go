package simulate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// World is the state as the two control planes see it: Envoy Gateway's translation, the Envoy pod it
// runs for Gateway apps, and istiod's mesh of injected pods.
type World struct {
	St           *State
	EG           *EnvoyGatewayResult
	Gateway      *EnvoyGatewayProxy
	Mesh         *Mesh
	EnvoyPod     string // namespace/name of the Envoy pod the walk starts in
	EnvoyService *corev1.Service
	// Live is what the running controllers served (CONTROLLERS=real); nil walks the in-process configuration.
	Live *LiveConfigs
	// Ambient is istiod's workload API for the state, as ztunnel receives it (mesh mode ambient only).
	Ambient *AmbientView
	// Modelled lists what the suite added to the state because no running controller made it.
	Modelled []string
}

// Gateway `apps` in the TEG namespace, as expose_app names it.
const (
	GatewayName  = "apps"
	envoyLabelGW = "gateway.envoyproxy.io/owning-gateway-name"
	envoyLabelNS = "gateway.envoyproxy.io/owning-gateway-namespace"
)

// NewWorld translates the state with Envoy Gateway, completes it with the Envoy Deployment, Service and
// pod Envoy Gateway would create where no running controller created them, and builds istiod's view.
func NewWorld(t *testing.T, st *State) (*World, error) {
	st = st.Clone()
	w := &World{St: st}
	var err error
	if w.EG, err = TranslateEnvoyGateway(st); err != nil {
		return nil, err
	}
	w.Gateway = w.EG.Gateways[TEGNamespace+"/"+GatewayName]
	if w.Gateway == nil {
		return nil, fmt.Errorf("Envoy Gateway made no configuration for Gateway %s/%s (keys %v)", TEGNamespace, GatewayName,
			sortedKeys(w.EG.Gateways))
	}
	if err := w.completeEnvoy(); err != nil {
		return nil, err
	}
	if st.Live == nil {
		w.Modelled = append(w.Modelled, "Secret "+TEGNamespace+"/envoy (the Envoy client certificate Envoy Gateway's certgen "+
			"writes, which its translator requires): a self-signed stand-in; no route depends on the certificate")
	}
	if w.Mesh, err = NewMesh(t, st); err != nil {
		return nil, err
	}
	if len(w.Mesh.Redirected) > 0 {
		w.Modelled = append(w.Modelled, "the annotation "+redirectionAnnotation+": enabled that istio-cni's node agent writes "+
			"on each pod it redirects into ztunnel, on the pods its enablement rules select: "+
			strings.Join(slices.Sorted(slices.Values(w.Mesh.Redirected)), ", "))
	}
	if st.MeshMode == "ambient" {
		if w.Ambient, err = w.Mesh.FetchAmbient(t); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// envoyObjects finds the Envoy Deployment and Service of Gateway apps in the state (the real
// controller's), by Envoy Gateway's owning-gateway labels.
func envoyObjects(st *State) (*appsv1.Deployment, *corev1.Service, error) {
	owned := func(l map[string]string) bool {
		return l[envoyLabelGW] == GatewayName && l[envoyLabelNS] == TEGNamespace
	}
	deployments, err := Typed[appsv1.Deployment](st, "Deployment", TEGNamespace)
	if err != nil {
		return nil, nil, err
	}
	services, err := Typed[corev1.Service](st, "Service", TEGNamespace)
	if err != nil {
		return nil, nil, err
	}
	var dep *appsv1.Deployment
	var svc *corev1.Service
	for _, d := range deployments {
		if owned(d.Labels) {
			dep = d
		}
	}
	for _, s := range services {
		if owned(s.Labels) {
			svc = s
		}
	}
	return dep, svc, nil
}

// completeEnvoy makes sure the state has the Envoy Deployment, Service, EndpointSlice and a running pod
// for Gateway apps: the running controller's, or else the ones Envoy Gateway's renderer makes, with a
// pod IP and a ClusterIP no other object has.
func (w *World) completeEnvoy() error {
	dep, svc, err := envoyObjects(w.St)
	if err != nil {
		return err
	}
	if dep != nil && svc != nil {
		pods, err := w.St.RunningPods(TEGNamespace)
		if err != nil {
			return err
		}
		for _, p := range pods {
			if p.Labels[envoyLabelGW] == GatewayName && p.Labels[envoyLabelNS] == TEGNamespace {
				w.EnvoyPod, w.EnvoyService = p.Namespace+"/"+p.Name, svc
				return nil
			}
		}
		return fmt.Errorf("the state has Envoy Deployment %s but no running pod of it", dep.Name)
	}
	dep, svc = w.Gateway.Deployment.DeepCopy(), w.Gateway.Service.DeepCopy()
	if dep == nil || svc == nil {
		return fmt.Errorf("Envoy Gateway rendered no Envoy Deployment or Service for Gateway %s", GatewayName)
	}
	podIP, clusterIP, err := w.freeAddresses()
	if err != nil {
		return err
	}
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = clusterIP, []string{clusterIP}
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: *dep.Spec.Template.ObjectMeta.DeepCopy(),
		Spec:       *dep.Spec.Template.Spec.DeepCopy(),
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: podIP, PodIPs: []corev1.PodIP{{IP: podIP}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	pod.Name, pod.Namespace = dep.Name+"-modelled", dep.Namespace
	pod.Spec.NodeName = "kwok-node-0"
	var ports []discoveryv1.EndpointPort
	for _, p := range svc.Spec.Ports {
		ports = append(ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(p.TargetPort.IntVal), Protocol: ptr.To(p.Protocol)})
	}
	slice := &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-modelled", Namespace: svc.Namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{podIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: pod.Name, Namespace: pod.Namespace}}},
		Ports: ports,
	}
	dep.TypeMeta = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}
	svc.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
	for _, obj := range []any{dep, svc, pod, slice} {
		if err := w.St.Put(obj); err != nil {
			return err
		}
	}
	w.Modelled = append(w.Modelled, fmt.Sprintf("Envoy Deployment and Service %s/%s as Envoy Gateway's renderer makes them "+
		"for Gateway %s, one pod of that Deployment and an EndpointSlice, on a pod IP and a ClusterIP no other object has",
		dep.Namespace, dep.Name, GatewayName))
	w.EnvoyPod, w.EnvoyService = pod.Namespace+"/"+pod.Name, svc
	return nil
}

// freeAddresses picks a pod IP in the pods' range and a ClusterIP in the Services' range that no
// object of the state has.
func (w *World) freeAddresses() (string, string, error) {
	pods, err := w.St.RunningPods("")
	if err != nil {
		return "", "", err
	}
	services, err := Typed[corev1.Service](w.St, "Service", "")
	if err != nil {
		return "", "", err
	}
	var podIPs, serviceIPs []string
	for _, p := range pods {
		podIPs = append(podIPs, p.Status.PodIP)
	}
	for _, s := range services {
		serviceIPs = append(serviceIPs, s.Spec.ClusterIP)
	}
	pick := func(taken []string) (string, error) {
		for _, ip := range taken {
			addr, err := netip.ParseAddr(ip)
			if err != nil || !addr.Is4() {
				continue
			}
			base := addr.As4()
			for last := 250; last > 1; last-- {
				base[3] = byte(last)
				candidate := netip.AddrFrom4(base).String()
				if !slices.Contains(taken, candidate) {
					return candidate, nil
				}
			}
		}
		return "", fmt.Errorf("no free address beside %v", taken)
	}
	podIP, err := pick(podIPs)
	if err != nil {
		return "", "", err
	}
	clusterIP, err := pick(serviceIPs)
	return podIP, clusterIP, err
}

// Describe names an address for the hop table: which pod or Service's ClusterIP it is.
func (w *World) Describe(addr string) string {
	host, port := hostPort(addr)
	suffix := ""
	if port != 0 {
		suffix = fmt.Sprintf(":%d", port)
	}
	for _, p := range w.Mesh.Pods {
		if p.Status.PodIP == host {
			return "pod IP of " + p.Namespace + "/" + workloadName(p) + suffix
		}
	}
	services, _ := Typed[corev1.Service](w.St, "Service", "")
	for _, s := range services {
		if s.Spec.ClusterIP == host {
			return "ClusterIP of Service " + s.Namespace + "/" + s.Name + suffix
		}
	}
	return addr
}

// workloadName is the pod's Deployment (the name less the ReplicaSet and pod suffixes).
func workloadName(p *corev1.Pod) string {
	if p.Labels[envoyLabelGW] != "" {
		return "Envoy of Gateway " + p.Labels[envoyLabelNS] + "/" + p.Labels[envoyLabelGW]
	}
	for _, ref := range p.OwnerReferences {
		if ref.Kind == "ReplicaSet" {
			if i := strings.LastIndex(ref.Name, "-"); i > 0 {
				return ref.Name[:i]
			}
		}
	}
	return p.Name
}

// edgeConfig is the configuration of TEG's Envoy the walk uses: what the running Envoy Gateway serves
// (CONTROLLERS=real), else its in-process translation.
func (w *World) edgeConfig() *Config {
	if w.Live != nil {
		return w.Live.EnvoyGateway
	}
	return w.Gateway.Xds
}
