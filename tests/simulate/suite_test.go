package simulate

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"istio.io/istio/pkg/env"
)

var (
	stateDir       = flag.String("state-dir", "", "directory with state-virtualservice.yaml and state-service.yaml (run.py dumps them)")
	statePath      = flag.String("state", "", "one state file, for TestCaptureLive")
	liveFlag       = flag.Bool("live", false, "walk what the running controllers served (live-<routing>.json beside the states)")
	liveOut        = flag.String("live-out", "", "where TestCaptureLive writes what the running controllers serve")
	hopTable       = flag.String("hop-table", "", "the generated docs file the walk is checked against")
	updateHopTable = flag.Bool("update-hop-table", false, "rewrite -hop-table from this run instead of checking it")
	figuresDoc     = flag.String("figures-doc", "", "the docs file whose generated figures block is checked against this run "+
		"(rewritten with -update-hop-table)")
)

// Modes are the walks, one per state run.py dumps: the two expose_app_routing modes in sidecar mode, and
// ambient mode (where routing is the Service's).
var Modes = []string{"virtualservice", "service", "ambient"}

// results collects what the tests saw, for the summary line and the generated hop table.
var results = struct {
	sync.Mutex
	hopsTried, hopsPassed          int
	ablationsTried, ablationsBroke int
	rows                           map[string][]string
	ablations                      map[string]string
	modelled                       []string
}{rows: map[string][]string{}, ablations: map[string]string{}}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	complete := len(results.rows) == len(Modes) && len(results.ablations) == len(ablations)
	if complete && *stateDir != "" {
		// This run's table, beside the states, whatever the outcome.
		_ = os.WriteFile(filepath.Join(*stateDir, "traffic-hops.md"), []byte(renderHopTable()), 0o644)
	}
	if code == 0 && complete && *hopTable != "" {
		if err := checkHopTable(*hopTable, *updateHopTable); err != nil {
			fmt.Println(err)
			code = 1
		}
	}
	if code == 0 && complete && *figuresDoc != "" {
		if err := checkFigures(*figuresDoc, *updateHopTable); err != nil {
			fmt.Println(err)
			code = 1
		}
	}
	fmt.Printf("simulate: hops=%d/%d ablations=%d/%d\n", results.hopsPassed, results.hopsTried, results.ablationsBroke,
		results.ablationsTried)
	os.Exit(code)
}

func loadState(t *testing.T, routing string) *State {
	t.Helper()
	if *stateDir == "" {
		t.Fatal("no -state-dir: run the suite with `make simulate` (tests/simulate/run.py), which dumps the state site.yml leaves")
	}
	st, err := LoadState(filepath.Join(*stateDir, "state-"+routing+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Routing != routing {
		t.Fatalf("state-%s.yaml was dumped with expose_app_routing=%s", routing, st.Routing)
	}
	return st
}

func world(t *testing.T, st *State, live bool) *World {
	t.Helper()
	w, err := NewWorld(t, st)
	if err != nil {
		t.Fatal(err)
	}
	if live {
		captured, err := LoadLive(filepath.Join(*stateDir, "live-"+st.Routing+".json"))
		if err != nil {
			t.Fatal(err)
		}
		w.UseLive(captured)
	}
	return w
}

func walk(t *testing.T, w *World) *Walk {
	t.Helper()
	wk, err := w.WalkAll()
	if err != nil {
		t.Fatal(err)
	}
	return wk
}

// TestHops walks GET http://www.example.com/httpbin/get through every Envoy on the way, for both
// routing modes, on the state site.yml left: every hop must pass.
func TestHops(t *testing.T) {
	for _, routing := range Modes {
		t.Run(routing, func(t *testing.T) {
			st := loadState(t, routing)
			w := world(t, st, *liveFlag && st.MeshMode != "ambient")
			wk := walk(t, w)
			for _, h := range wk.Hops {
				t.Run(h.ID, func(t *testing.T) {
					results.Lock()
					results.hopsTried++
					if h.OK {
						results.hopsPassed++
					}
					results.Unlock()
					if !h.OK {
						t.Errorf("hop %s (%s) fails: %s", h.ID, h.Title, h.Reason)
					}
				})
			}
			checkRoutingSpecifics(t, w, wk)
			results.Lock()
			results.rows[routing] = w.HopRows(wk)
			for _, m := range w.Modelled {
				results.modelled = append(results.modelled, w.stable(m))
			}
			results.Unlock()
		})
	}
}

// checkRoutingSpecifics holds what differs between the modes at hop 1: in virtualservice mode Envoy
// Gateway sends to the pod (its default endpoint routing), keeping Host and path; in service mode to
// the Service's ClusterIP, with the Host rewritten to the Service's name.
func checkRoutingSpecifics(t *testing.T, w *World, wk *Walk) {
	h1 := wk.Hop("1")
	if h1 == nil || h1.Match == nil || h1.Match.Error != nil {
		return
	}
	up := w.Describe(h1.Match.Upstream)
	switch wk.Routing {
	case "virtualservice":
		if !strings.HasPrefix(up, "pod IP of "+AppNamespace+"/"+AppService+":") || h1.Match.Host != RequestHost || h1.Match.Path != RequestPath {
			t.Errorf("virtualservice routing: hop 1 sends %s %s to %s, want Host %s, path %s, to a pod of %s", h1.Match.Host,
				h1.Match.Path, up, RequestHost, RequestPath, AppService)
		}
	case "service", "ambient":
		want := fmt.Sprintf("ClusterIP of Service %s/%s:%d", AppNamespace, AppService, AppPort)
		if up != want || h1.Match.Host != AppServiceFQD {
			t.Errorf("service routing: hop 1 sends Host %s to %s, want Host %s to %s", h1.Match.Host, up, AppServiceFQD, want)
		}
	}
}

// TestCompatibilityProfile: the in-process istiod runs as the deployed minor. Where the module is a snapshot of a
// later minor, with the pilot env of the deployed minor's compatibility profile (compatibilityVersion makes it
// behave as the deployed one): run.py takes it from the chart and sets it for this process, because istiod's
// features read the environment once, at start. Each variable must be set here and be one the pinned istiod
// registers (pkg/env). Where the deployed minor is the module's own, with none: no flag of the previous minor's
// profile (those that would turn this minor's behaviour changes off) is set, and istiod registers at least one.
func TestCompatibilityProfile(t *testing.T) {
	st := loadState(t, Modes[0])
	registered := map[string]bool{}
	for _, v := range env.VarDescriptions() {
		registered[v.Name] = true
	}
	if st.IstioChart.CompatibilityVersion == st.IstioChart.ModuleMinor {
		if len(st.IstioChart.CompatibilityEnv) != 0 {
			t.Errorf("the deployed minor %s is the module's own, yet the state has compatibility flags %v",
				st.IstioChart.ModuleMinor, st.IstioChart.CompatibilityEnv)
		}
		if len(st.IstioChart.PreviousProfileEnv) == 0 {
			t.Fatalf("the state has no pilot env of the profile before the module's own minor %s: nothing to check",
				st.IstioChart.ModuleMinor)
		}
		read := 0
		for name := range st.IstioChart.PreviousProfileEnv {
			if got, set := os.LookupEnv(name); set {
				t.Errorf("Istio %s runs as its own minor, yet the in-process istiod has %s=%q of the previous minor's profile",
					st.IstioChart.ModuleMinor, name, got)
			}
			if registered[name] {
				read++
			} else {
				// The profiles are shared with the gateway chart; 1.30's PILOT_SPAWN_UPSTREAM_SPAN_FOR_GATEWAY is
				// registered by no package of the 1.31 snapshot.
				t.Logf("the previous minor's profile sets %s, which the pinned istiod does not register", name)
			}
		}
		if read == 0 {
			t.Errorf("the pinned istiod registers none of the previous minor's profile flags %v: nothing is checked",
				st.IstioChart.PreviousProfileEnv)
		}
		return
	}
	if len(st.IstioChart.CompatibilityEnv) == 0 {
		t.Fatalf("the state has no pilot env of compatibility profile %q", st.IstioChart.CompatibilityVersion)
	}
	for name, want := range st.IstioChart.CompatibilityEnv {
		if got, set := os.LookupEnv(name); !set || got != want {
			t.Errorf("compatibility profile %s sets %s=%s; the in-process istiod runs with %q", st.IstioChart.CompatibilityVersion,
				name, want, got)
		}
		if !registered[name] {
			t.Errorf("compatibility profile %s sets %s, which the pinned istiod does not read", st.IstioChart.CompatibilityVersion, name)
		}
	}
}

// --- ablations ---------------------------------------------------------------------------------

type ablation struct {
	name    string
	routing string
	step    string // the step of the procedure left out
	edit    func(st *State) error
	hop     string // the hop that must break first
	cause   Cause  // the condition it must break on (causes.go), as the upstream rule that decides reports it
	// also lists further hops that must break (on any condition), where the step carries more than one hop.
	also []string
}

var ablations = []ablation{
	{name: "NoVirtualService", routing: "virtualservice", step: "expose_app's VirtualService (bound to the mesh gateway)",
		edit: func(st *State) error { return removeAll(st, "VirtualService") },
		hop:  "2", cause: CausePassthrough},
	{name: "NoAppProtocolTLS", routing: "virtualservice", step: "teg_istio_prep's appProtocol: tls on envoy-gateway port 18000",
		edit: func(st *State) error { return setAppProtocol(st, TEGNamespace, "envoy-gateway", 18000, nil) },
		hop:  "4a", cause: CauseMTLSMismatch},
	{name: "NoRateLimitAppProtocol", routing: "virtualservice",
		step: "teg_istio_prep's appProtocol: tls on envoy-ratelimit port 8081 (the fix of hop 4b)",
		edit: func(st *State) error { return setAppProtocol(st, TEGNamespace, "envoy-ratelimit", 8081, nil) },
		hop:  "4b", cause: CauseMTLSMismatch},
	{name: "NoInjectionLabel", routing: "virtualservice", step: "teg_istio_prep's injection label on the TEG namespace (so no sidecars there)",
		edit: func(st *State) error { return unlabelAndUninject(st, TEGNamespace) },
		hop:  "2", cause: CauseNoSidecar},
	{name: "NoRestart", routing: "virtualservice",
		step: "teg_restart (TEG's control-plane pods keep running as they were created, before the injection label)",
		edit: func(st *State) error { return notRestarted(st, TEGNamespace) },
		hop:  "4a", cause: CauseNoSidecar, also: []string{"4b", "4c", "4d"}},
	{name: "Permissive", routing: "virtualservice", step: "strict_mtls (PeerAuthentication default PERMISSIVE instead of STRICT)",
		edit: func(st *State) error { return setMTLSMode(st, "PERMISSIVE") },
		hop:  "3p", cause: CausePlaintextAccepted},
	{name: "HTTP2BackendPort", routing: "virtualservice", step: "the http2 check (the httpbin Service port named http2)",
		edit: func(st *State) error { return renameAppPort(st, "http2") },
		hop:  "3", cause: CauseHTTP2Upstream},
	{name: "AppPortNot80", routing: "virtualservice", step: "the sample's port 80 (httpbin listening on 8080)",
		edit: func(st *State) error { return moveAppPort(st, 8080) },
		hop:  "2", cause: CausePassthrough},
	{name: "NoIncludeInboundPortsAnnotation", routing: "virtualservice",
		step: "teg_istio_prep's includeInboundPorts \"\" pod annotation on the EnvoyProxy",
		edit: func(st *State) error {
			return dropEnvoyProxyAnnotation(st, "traffic.sidecar.istio.io/includeInboundPorts")
		},
		hop: "5", cause: CauseNoFilterChain},
	{name: "AmbientNoNamespaceLabel", routing: "ambient",
		step: "teg_istio_prep's istio.io/dataplane-mode=ambient label on the TEG namespace (so ztunnel carries nothing of TEG's)",
		edit: func(st *State) error { return unlabelNamespace(st, TEGNamespace, dataplaneModeLabel) },
		hop:  "2", cause: CauseRBACDeny},
	{name: "AmbientPermissive", routing: "ambient", step: "strict_mtls (PeerAuthentication default PERMISSIVE instead of STRICT)",
		edit: func(st *State) error { return setMTLSMode(st, "PERMISSIVE") },
		hop:  "3p", cause: CausePlaintextAccepted},
	{name: "AmbientNoBypassInboundCapture", routing: "ambient",
		step: "teg_istio_prep's ambient.istio.io/bypass-inbound-capture \"true\" pod annotation on the EnvoyProxy",
		edit: func(st *State) error { return dropEnvoyProxyAnnotation(st, bypassInboundCapture) },
		hop:  "5", cause: CauseRBACDeny},
	{name: "AmbientNoServiceRouting", routing: "ambient",
		step: "expose_app's routingType: Service on the EnvoyProxy, with a waypoint for httpbin's Service (as a user adds one)",
		edit: func(st *State) error {
			if err := addWaypoint(st); err != nil {
				return err
			}
			return dropRoutingType(st)
		},
		hop: "2", cause: CauseWaypointSkipped},
}

func runAblation(t *testing.T, name string) {
	i := slices.IndexFunc(ablations, func(a ablation) bool { return a.name == name })
	if i < 0 {
		t.Fatalf("no ablation %s", name)
	}
	a := ablations[i]
	st := loadState(t, a.routing)
	if err := a.edit(st); err != nil {
		t.Fatal(err)
	}
	// Ablations walk the in-process configuration: the running controllers served the unedited state.
	w := world(t, st, false)
	wk := walk(t, w)
	broke, outcome := false, ""
	first := wk.FirstFailure()
	h := wk.Hop(a.hop)
	switch {
	case first == nil:
		outcome = "nothing broke"
		t.Errorf("leaving out %s breaks no hop; want hop %s to break", a.step, a.hop)
	case first.ID != a.hop:
		outcome = fmt.Sprintf("hop %s broke first: %s", first.ID, first.Reason)
		t.Errorf("leaving out %s breaks hop %s first (%s); want hop %s", a.step, first.ID, first.Reason, a.hop)
	case h.Cause != a.cause:
		outcome = fmt.Sprintf("hop %s broke on %q: %s", h.ID, h.Cause, h.Reason)
		t.Errorf("hop %s breaks on %q (%s), want %q", h.ID, h.Cause, h.Reason, a.cause)
	default:
		broke, outcome = true, fmt.Sprintf("hop %s breaks [%s]: %s", h.ID, h.Cause, h.Reason)
	}
	for _, id := range a.also {
		if other := wk.Hop(id); other == nil || other.OK {
			broke = false
			outcome += fmt.Sprintf("; hop %s does not break", id)
			t.Errorf("leaving out %s leaves hop %s passing; want it broken too", a.step, id)
		} else {
			outcome += fmt.Sprintf("; hop %s breaks too [%s]", id, other.Cause)
		}
	}
	t.Log(outcome)
	results.Lock()
	results.ablationsTried++
	if broke {
		results.ablationsBroke++
	}
	results.ablations[a.name] = fmt.Sprintf("| %s | %s | %s | %s |", cell(a.step), a.routing, a.hop, cell(w.stable(outcome)))
	results.Unlock()
}

func TestAblationNoVirtualService(t *testing.T)       { runAblation(t, "NoVirtualService") }
func TestAblationNoAppProtocolTLS(t *testing.T)       { runAblation(t, "NoAppProtocolTLS") }
func TestAblationNoRateLimitAppProtocol(t *testing.T) { runAblation(t, "NoRateLimitAppProtocol") }
func TestAblationNoInjectionLabel(t *testing.T)       { runAblation(t, "NoInjectionLabel") }
func TestAblationNoRestart(t *testing.T)              { runAblation(t, "NoRestart") }
func TestAblationPermissive(t *testing.T)             { runAblation(t, "Permissive") }
func TestAblationHTTP2BackendPort(t *testing.T)       { runAblation(t, "HTTP2BackendPort") }
func TestAblationAppPortNot80(t *testing.T)           { runAblation(t, "AppPortNot80") }
func TestAblationNoIncludeInboundPorts(t *testing.T) {
	runAblation(t, "NoIncludeInboundPortsAnnotation")
}
func TestAblationAmbientNoNamespaceLabel(t *testing.T) { runAblation(t, "AmbientNoNamespaceLabel") }
func TestAblationAmbientPermissive(t *testing.T)       { runAblation(t, "AmbientPermissive") }
func TestAblationAmbientNoBypassInboundCapture(t *testing.T) {
	runAblation(t, "AmbientNoBypassInboundCapture")
}
func TestAblationAmbientNoServiceRouting(t *testing.T) { runAblation(t, "AmbientNoServiceRouting") }

// TestAmbientWaypointWithServiceRouting is the control of the AmbientNoServiceRouting ablation: the same
// waypoint, with expose_app's Service routing kept, is on the request's way.
func TestAmbientWaypointWithServiceRouting(t *testing.T) {
	st := loadState(t, "ambient")
	if err := addWaypoint(st); err != nil {
		t.Fatal(err)
	}
	h := walk(t, world(t, st, false)).Hop("2")
	if h == nil || !h.OK || !strings.Contains(strings.Join(h.Detail, "; "), "to waypoint "+AppNamespace+"/waypoint.") {
		t.Fatalf("with a waypoint for Service %s and Service routing, hop 2 must go through it: %+v", AppService, h)
	}
}

// --- state edits ---------------------------------------------------------------------------------

func removeAll(st *State, kind string) error {
	if st.Remove(kind, "", "") == 0 {
		return fmt.Errorf("the state has no %s to remove", kind)
	}
	return nil
}

func setAppProtocol(st *State, namespace, name string, port int32, appProtocol *string) error {
	svc, err := TypedOne[corev1.Service](st, "Service", namespace, name)
	if err != nil {
		return err
	}
	p := servicePort(svc, port)
	if p == nil {
		return fmt.Errorf("Service %s/%s has no port %d", namespace, name, port)
	}
	p.AppProtocol = appProtocol
	svc.APIVersion, svc.Kind = "v1", "Service"
	return st.Put(svc)
}

// unlabelAndUninject takes the injection labels off a namespace and puts its pods back as their
// Deployments' templates describe them, without the sidecar a running istiod may have injected.
func unlabelAndUninject(st *State, namespace string) error {
	obj, err := st.One("Namespace", "", namespace)
	if err != nil {
		return err
	}
	u := unstructured.Unstructured{Object: obj}
	l := u.GetLabels()
	delete(l, "istio-injection")
	delete(l, "istio.io/rev")
	u.SetLabels(l)
	_, err = uninject(st, namespace, func(*appsv1.Deployment) bool { return true })
	return err
}

// restartTrigger is the pod-template annotation teg_restart records on each Deployment it restarts
// (plugins/modules/rollout_restart.py).
const restartTrigger = "teg.istio/restart-trigger"

// notRestarted is the namespace as it is without teg_restart: the pods of the Deployments it restarted (those
// whose template records its trigger) are the ones created before the namespace's injection label, so the
// injector webhook, which acts only when a pod is created, never saw them (and a running istiod's sidecar is
// taken off where it injected one).
func notRestarted(st *State, namespace string) error {
	pods, err := uninject(st, namespace, func(d *appsv1.Deployment) bool {
		_, restarted := d.Spec.Template.Annotations[restartTrigger]
		return restarted
	})
	if err != nil {
		return err
	}
	if len(pods) == 0 {
		return fmt.Errorf("no pod in %s belongs to a Deployment with %s: teg_restart restarted nothing", namespace, restartTrigger)
	}
	st.AdmittedBeforeInjection = append(st.AdmittedBeforeInjection, pods...)
	return nil
}

// uninject puts the running pods of the namespace's Deployments that selected picks back as their templates
// describe them (without a sidecar a running istiod injected) and returns them (namespace/name).
func uninject(st *State, namespace string, selected func(*appsv1.Deployment) bool) ([]string, error) {
	deployments, err := Typed[appsv1.Deployment](st, "Deployment", namespace)
	if err != nil {
		return nil, err
	}
	pods, err := st.RunningPods(namespace)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, pod := range pods {
		for _, d := range deployments {
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil || !selected(d) || !sel.Matches(labels.Set(pod.Labels)) {
				continue
			}
			out = append(out, pod.Namespace+"/"+pod.Name)
			if !HasSidecar(pod) {
				continue
			}
			pod.Labels = d.Spec.Template.Labels
			pod.Annotations = d.Spec.Template.Annotations
			pod.Spec.Containers, pod.Spec.InitContainers = d.Spec.Template.Spec.Containers, d.Spec.Template.Spec.InitContainers
			pod.Spec.Volumes = d.Spec.Template.Spec.Volumes
			pod.APIVersion, pod.Kind = "v1", "Pod"
			if err := st.Put(pod); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// addWaypoint gives the app's namespace a waypoint, as `istioctl waypoint apply -n httpbin --enroll-namespace`
// leaves it once the waypoint runs: a Gateway of class istio-waypoint (its HBONE listener, the address its
// status reports) and the namespace's istio.io/use-waypoint label.
func addWaypoint(st *State) error {
	gw := map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": "waypoint", "namespace": AppNamespace},
		"spec": map[string]any{"gatewayClassName": "istio-waypoint",
			"listeners": []any{map[string]any{"name": "mesh", "port": int64(15008), "protocol": "HBONE"}}},
		"status": map[string]any{"addresses": []any{map[string]any{"type": "Hostname",
			"value": "waypoint." + AppNamespace + ".svc.cluster.local"}}},
	}
	st.Objects = append(st.Objects, gw)
	ns, err := st.One("Namespace", "", AppNamespace)
	if err != nil {
		return err
	}
	labels, _, _ := unstructured.NestedStringMap(ns, "metadata", "labels")
	if labels == nil {
		labels = map[string]string{}
	}
	labels["istio.io/use-waypoint"] = "waypoint"
	return unstructured.SetNestedStringMap(ns, labels, "metadata", "labels")
}

// dropRoutingType takes routingType off every EnvoyProxy: Envoy Gateway then routes to the pods' IPs.
func dropRoutingType(st *State) error {
	found := 0
	for _, ep := range st.Find("EnvoyProxy", "", "") {
		if _, has, _ := unstructured.NestedString(ep, "spec", "routingType"); has {
			unstructured.RemoveNestedField(ep, "spec", "routingType")
			found++
		}
	}
	if found == 0 {
		return fmt.Errorf("no EnvoyProxy sets routingType")
	}
	return nil
}

// unlabelNamespace takes a label off a namespace.
func unlabelNamespace(st *State, namespace, key string) error {
	found, err := st.One("Namespace", "", namespace)
	if err != nil {
		return err
	}
	labels, _, _ := unstructured.NestedStringMap(found, "metadata", "labels")
	if _, has := labels[key]; !has {
		return fmt.Errorf("namespace %s has no label %s", namespace, key)
	}
	delete(labels, key)
	return unstructured.SetNestedStringMap(found, labels, "metadata", "labels")
}

func setMTLSMode(st *State, mode string) error {
	found := st.Find("PeerAuthentication", "istio-system", "default")
	if len(found) != 1 {
		return fmt.Errorf("the state has no PeerAuthentication istio-system/default")
	}
	return unstructured.SetNestedField(found[0], mode, "spec", "mtls", "mode")
}

// editAppPort changes the httpbin Service's port and the ports of its EndpointSlices, as the cluster
// would show them after that change.
func editAppPort(st *State, service func(*corev1.ServicePort), slice func(port map[string]any)) error {
	svc, err := TypedOne[corev1.Service](st, "Service", AppNamespace, AppService)
	if err != nil {
		return err
	}
	p := servicePort(svc, AppPort)
	if p == nil {
		return fmt.Errorf("Service %s/%s has no port %d", AppNamespace, AppService, AppPort)
	}
	service(p)
	svc.APIVersion, svc.Kind = "v1", "Service"
	if err := st.Put(svc); err != nil {
		return err
	}
	for _, obj := range st.Find("EndpointSlice", AppNamespace, "") {
		ports, _, _ := unstructured.NestedSlice(obj, "ports")
		for _, p := range ports {
			slice(p.(map[string]any))
		}
		if err := unstructured.SetNestedSlice(obj, ports, "ports"); err != nil {
			return err
		}
	}
	return nil
}

func renameAppPort(st *State, name string) error {
	return editAppPort(st, func(p *corev1.ServicePort) { p.Name = name }, func(p map[string]any) { p["name"] = name })
}

// moveAppPort makes the httpbin container listen on another port: the container port, the Service's
// targetPort and the EndpointSlices' port, as the cluster would have them.
func moveAppPort(st *State, port int32) error {
	err := editAppPort(st, func(p *corev1.ServicePort) { p.TargetPort = intstr.FromInt32(port) },
		func(p map[string]any) { p["port"] = int64(port) })
	if err != nil {
		return err
	}
	pods, err := Typed[corev1.Pod](st, "Pod", AppNamespace)
	if err != nil {
		return err
	}
	for _, pod := range pods {
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == AppService {
				for j := range pod.Spec.Containers[i].Ports {
					pod.Spec.Containers[i].Ports[j].ContainerPort = port
				}
			}
		}
		pod.APIVersion, pod.Kind = "v1", "Pod"
		if err := st.Put(pod); err != nil {
			return err
		}
	}
	return nil
}

// dropEnvoyProxyAnnotation removes one pod annotation from the EnvoyProxy GatewayClass teg uses, and
// the Envoy Deployment, Service and pods a running Envoy Gateway made from it, so that the walk uses
// what Envoy Gateway renders from the edited EnvoyProxy.
func dropEnvoyProxyAnnotation(st *State, key string) error {
	found := 0
	for _, ep := range st.Find("EnvoyProxy", "", "") {
		annotations, ok, _ := unstructured.NestedStringMap(ep, "spec", "provider", "kubernetes", "envoyDeployment", "pod", "annotations")
		if !ok {
			continue
		}
		if _, has := annotations[key]; has {
			delete(annotations, key)
			found++
			if err := unstructured.SetNestedStringMap(ep, annotations, "spec", "provider", "kubernetes", "envoyDeployment", "pod", "annotations"); err != nil {
				return err
			}
		}
	}
	if found == 0 {
		return fmt.Errorf("no EnvoyProxy carries the pod annotation %s", key)
	}
	dep, svc, err := envoyObjects(st)
	if err != nil {
		return err
	}
	if dep != nil {
		st.Remove("Deployment", dep.Namespace, dep.Name)
		for _, p := range st.Find("Pod", dep.Namespace, "") {
			u := unstructured.Unstructured{Object: p}
			if u.GetLabels()[envoyLabelGW] == GatewayName {
				st.Remove("Pod", u.GetNamespace(), u.GetName())
			}
		}
	}
	if svc != nil {
		st.Remove("Service", svc.Namespace, svc.Name)
	}
	return nil
}

// --- the live capture and agreement -----------------------------------------------------------------

// TestCaptureLive asks the running controllers of a CONTROLLERS=real cluster what they serve for one
// state (run.py calls it once per routing mode while that mode's state is live).
func TestCaptureLive(t *testing.T) {
	if *statePath == "" || *liveOut == "" {
		t.Skip("run by run.py with -state and -live-out on a CONTROLLERS=real cluster")
	}
	st, err := LoadState(*statePath)
	if err != nil {
		t.Fatal(err)
	}
	w := world(t, st, false)
	live, err := CaptureLive(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveLive(*liveOut, live); err != nil {
		t.Fatal(err)
	}
}

// TestLiveAgreement: where the walk used what the running controllers served, the in-process
// configuration must lead to the same decisions at every hop.
func TestLiveAgreement(t *testing.T) {
	if !*liveFlag {
		t.Skip("no live capture: CONTROLLERS=real only")
	}
	for _, routing := range Modes {
		t.Run(routing, func(t *testing.T) {
			st := loadState(t, routing)
			if st.MeshMode == "ambient" {
				t.Skip("the ambient walk reads the in-process istiod only")
			}
			live, offline := walk(t, world(t, st, true)), walk(t, world(t, st, false))
			for _, h := range live.Hops {
				o := offline.Hop(h.ID)
				if got, want := hopKey(o), hopKey(h); got != want {
					t.Errorf("hop %s: in-process %s, running controllers %s", h.ID, got, want)
				}
			}
		})
	}
}

// hopKey is what must agree between a walk of the running controllers' configuration and of the
// in-process one: the outcome, the cluster, where it goes and how.
func hopKey(h *Hop) string {
	if h.Match == nil {
		return fmt.Sprintf("ok=%v", h.OK)
	}
	m := h.Match
	_, port := hostPort(m.Upstream)
	return fmt.Sprintf("ok=%v route=%s cluster=%s port=%d host=%s path=%s tls=%s http2=%v", h.OK, m.RouteMatched, m.ClusterMatched,
		port, m.Host, m.Path, m.TLS, m.HTTP2)
}

// --- the generated hop table ---------------------------------------------------------------------

func renderHopTable() string {
	var b strings.Builder
	b.WriteString("# Traffic hops, as the suite walks them\n\n")
	b.WriteString("<!-- Generated by `make simulate` (tests/simulate); do not edit. `make simulate UPDATE=1` rewrites it. -->\n\n")
	b.WriteString("`GET http://www.example.com/httpbin/get` into Gateway `apps` port 80, on the state `playbooks/site.yml` leaves, " +
		"walked through the configuration Envoy Gateway v1.9.0 and istiod generate for each Envoy on the way. " +
		"How it works, and what it cannot see: [traffic-simulation.md](traffic-simulation.md).\n\n")
	b.WriteString("## The walk\n\n")
	b.WriteString(HopTableHeader + "\n")
	for _, routing := range Modes {
		for _, row := range results.rows[routing] {
			b.WriteString(row + "\n")
		}
	}
	b.WriteString("\n## Ablations: one step left out, the hop that breaks\n\n")
	b.WriteString("| step left out | walk | hop that must break | outcome |\n|---|---|---|---|\n")
	for _, a := range ablations {
		b.WriteString(results.ablations[a.name] + "\n")
	}
	modelled := slices.Compact(slices.Sorted(slices.Values(results.modelled)))
	if len(modelled) > 0 {
		b.WriteString(modelledHeading + ", because no running controller made it (stand-in controllers)\n\n")
		for _, m := range modelled {
			b.WriteString("- " + m + "\n")
		}
	}
	return b.String()
}

// modelledHeading starts the part of the table that only a stand-in run has.
const modelledHeading = "\n## Modelled"

func checkHopTable(path string, update bool) error {
	want := renderHopTable()
	if update {
		return os.WriteFile(path, []byte(want), 0o644)
	}
	got, err := os.ReadFile(path)
	if *liveFlag { // the running controllers made what a stand-in run models: the walk must be the same
		got, want = []byte(strings.Split(string(got), modelledHeading)[0]), strings.Split(want, modelledHeading)[0]
	}
	if err != nil || string(got) != want {
		return fmt.Errorf("FAIL: %s is not what this run walked (this run's table is %s): run `make simulate UPDATE=1` "+
			"and commit it", path, filepath.Join(*stateDir, "traffic-hops.md"))
	}
	return nil
}

// The figures of docs/traffic-simulation.md, between these markers, are this run's: checked like the hop table.
const (
	figuresStart = "<!-- simulate-figures: generated by `make simulate` from its run; `make simulate UPDATE=1` rewrites it -->"
	figuresEnd   = "<!-- /simulate-figures -->"
)

func renderFigures() string {
	var walks, perAblationWalk []string
	for _, routing := range Modes {
		walks = append(walks, fmt.Sprintf("%d in the %s walk", len(results.rows[routing]), routing))
		n := 0
		for _, a := range ablations {
			if a.routing == routing {
				n++
			}
		}
		if n > 0 {
			perAblationWalk = append(perAblationWalk, fmt.Sprintf("%d on the %s walk", n, routing))
		}
	}
	return fmt.Sprintf("A full run walks %d hops (%s) and tries %d ablations (%s), so it ends with\n"+
		"`simulate: hops=%d/%d ablations=%d/%d` when every hop passes and every ablation breaks the hop it should.",
		results.hopsTried, strings.Join(walks, ", "), len(ablations), strings.Join(perAblationWalk, ", "),
		results.hopsTried, results.hopsTried, len(ablations), len(ablations))
}

func checkFigures(path string, update bool) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	text := string(raw)
	start, end := strings.Index(text, figuresStart), strings.Index(text, figuresEnd)
	if start < 0 || end < start {
		return fmt.Errorf("FAIL: %s has no block between %q and %q", path, figuresStart, figuresEnd)
	}
	want := text[:start] + figuresStart + "\n" + renderFigures() + "\n" + text[end:]
	if update {
		return os.WriteFile(path, []byte(want), 0o644)
	}
	if text != want {
		return fmt.Errorf("FAIL: the figures of %s are not this run's (%s): run `make simulate UPDATE=1` and commit it", path,
			renderFigures())
	}
	return nil
}
