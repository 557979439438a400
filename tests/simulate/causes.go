package simulate

import (
	"errors"

	"istio.io/istio/pilot/pkg/simulation"
)

// Cause is the condition a hop broke on, as a value the walk sets where it makes the decision, so that an
// ablation is judged by the condition (which upstream rule refused the connection) and not by the words of
// the hop's reason. Where the decision is Envoy's matching, the cause comes from the sentinel error Istio's
// simulation package returns for it (pilot/pkg/simulation/traffic.go); where it is ztunnel's authorization,
// from the policy action that decided; elsewhere from the fact the walk read (docs/traffic-simulation.md,
// "Causes").
type Cause string

const (
	// CauseEarlierHop: the hop depends on an earlier one, which failed.
	CauseEarlierHop Cause = "earlier hop failed"

	// Envoy's matching, one per error of pilot/pkg/simulation (errorCause).
	CauseNoListener           Cause = "no listener matched"            // simulation.ErrNoListener
	CauseNoFilterChain        Cause = "no filter chain matched"        // simulation.ErrNoFilterChain
	CauseMultipleFilterChains Cause = "multiple filter chains matched" // simulation.ErrMultipleFilterChain
	CauseMTLSMismatch         Cause = "invalid mTLS"                   // simulation.ErrMTLSError
	CauseTLSMismatch          Cause = "invalid TLS"                    // simulation.ErrTLSError
	CauseProtocolError        Cause = "protocol error"                 // simulation.ErrProtocolError
	CauseNoVirtualHost        Cause = "no virtual host matched"        // simulation.ErrNoVirtualHost
	CauseNoRoute              Cause = "no route matched"               // simulation.ErrNoRoute
	CauseTLSRedirect          Cause = "tls required, sending 301"      // simulation.ErrTLSRedirect
	CauseSimulation           Cause = "other simulation error"         // any other error of the simulation

	// What the matched configuration does, read from it.
	CauseClusterNotFound   Cause = "cluster not found"     // the route names a cluster CDS does not hold (Envoy: 503 NC)
	CauseNoEndpoint        Cause = "no endpoint"           // the cluster has no endpoint (Envoy: 503 UH)
	CausePassthrough       Cause = "passthrough cluster"   // Istio's fallthrough for a destination it has no route for
	CauseWrongCluster      Cause = "another cluster"       // a route to a cluster that is not the app's
	CauseNotIstioMTLS      Cause = "not Istio mutual TLS"  // the upstream transport socket is not ISTIO_MUTUAL
	CauseHTTP2Upstream     Cause = "HTTP/2 upstream"       // the cluster speaks HTTP/2 to an HTTP/1.1 app
	CauseWrongPath         Cause = "wrong path upstream"   // the route's rewrite leaves another path
	CauseRouteNotAccepted  Cause = "route not accepted"    // Envoy Gateway's status of the HTTPRoute
	CauseTLSToBackend      Cause = "TLS to the backend"    // Envoy Gateway originates TLS the sidecar cannot route
	CauseMissingPort       Cause = "port missing"          // a Service lacks the port the request needs
	CausePlaintextAccepted Cause = "plaintext accepted"    // STRICT not in force: a plaintext connection is accepted
	CauseInboundCaptured   Cause = "inbound captured"      // the mesh captures the edge port and refuses or reroutes
	CauseNotCaptured       Cause = "outbound not captured" // istio-init leaves the port out of the sidecar's capture
	CauseRoutedAsHTTP      Cause = "routed as HTTP"        // a TCP connection lands on an HTTP connection manager's route

	// Injection: the pod runs no sidecar.
	CauseNoSidecar Cause = "no sidecar"

	// ztunnel's authorization (pkg/workloadapi/security/authorization.proto).
	CauseRBACDeny        Cause = "RBAC deny"           // a DENY policy matches
	CauseRBACNoAllow     Cause = "RBAC no ALLOW"       // ALLOW policies exist and none matches
	CauseNotInMesh       Cause = "no ztunnel workload" // the destination is no HBONE workload: nothing enforces mTLS
	CauseWaypointSkipped Cause = "waypoint skipped"    // the connection bypasses the Service's waypoint
	CauseNoZtunnelRoute  Cause = "no ztunnel route"    // the address is neither a Service nor a workload
)

// errorCause maps the simulation's error to its condition: by the sentinel errors of
// istio.io/istio/pilot/pkg/simulation, never by the message.
func errorCause(err error) Cause {
	for _, known := range []struct {
		err   error
		cause Cause
	}{
		{simulation.ErrNoListener, CauseNoListener},
		{simulation.ErrNoFilterChain, CauseNoFilterChain},
		{simulation.ErrMultipleFilterChain, CauseMultipleFilterChains},
		{simulation.ErrMTLSError, CauseMTLSMismatch},
		{simulation.ErrTLSError, CauseTLSMismatch},
		{simulation.ErrProtocolError, CauseProtocolError},
		{simulation.ErrNoVirtualHost, CauseNoVirtualHost},
		{simulation.ErrNoRoute, CauseNoRoute},
		{simulation.ErrTLSRedirect, CauseTLSRedirect},
		{errClusterNotFound, CauseClusterNotFound},
		{errNoEndpoint, CauseNoEndpoint},
	} {
		if errors.Is(err, known.err) {
			return known.cause
		}
	}
	return CauseSimulation
}
