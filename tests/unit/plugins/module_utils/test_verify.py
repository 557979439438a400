"""The rules of teg.istio.mesh_verify (plugins/module_utils/verify.py): what counts as "in place" and
"the two routing layers agree". The module's reads are covered by the integration tests."""

import pytest

from ansible_collections.teg.istio.plugins.module_utils.verify import (
    verify_checks,
    verify_config_findings,
    verify_status_findings,
)

NS = "envoy-gateway-system"
EXPECTED = {
    "teg_namespace": NS, "injection_labels": {"istio-injection": "enabled"}, "service": "envoy-gateway",
    "service_port": 18000, "app_protocol": "tls", "gatewayclass": "teg",
    "ratelimit_service": "envoy-ratelimit", "ratelimit_service_port": 8081,
    "pod_annotations": {"traffic.sidecar.istio.io/includeInboundPorts": ""},
    "apps": [{"name": "httpbin", "namespace": "httpbin"}], "routing": "virtualservice",
    "peerauthentication": {"namespace": "istio-system", "mode": "STRICT"},
}


def _httproute(prefix="/httpbin", host="www.example.com", service="httpbin", port=8000):
    return {"kind": "HTTPRoute", "metadata": {"name": "httpbin", "namespace": "httpbin",
                                              "labels": {"teg.istio/app": "httpbin"}},
            "spec": {"hostnames": [host], "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
                                                     "backendRefs": [{"name": service, "port": port}]}]}}


def _virtualservice(prefix="/httpbin/", host="www.example.com", dest="httpbin.httpbin.svc.cluster.local", port=8000):
    route = {"destination": {"host": dest, "port": {"number": port}}}
    return {"kind": "VirtualService", "metadata": {"name": "apps-" + host, "namespace": NS},
            "spec": {"hosts": [host], "gateways": ["mesh"],
                     "http": [{"match": [{"uri": {"prefix": prefix}}], "rewrite": {"uri": "/"}, "route": [route]},
                              {"match": [{"uri": {"exact": prefix.rstrip("/")}}], "route": [route]}]}}


def _observed():
    return {
        "teg_namespace": {"metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}},
        "service": {"spec": {"ports": [{"name": "grpc", "port": 18000, "appProtocol": "tls"}]}},
        "ratelimit_service": {"spec": {"ports": [{"name": "http", "port": 8081, "appProtocol": "tls"}]}},
        "gatewayclass": {"name": "teg", "parameters_ref": {
            "group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "teg-envoy-proxy", "namespace": NS}},
        "envoyproxy": {"spec": {"provider": {"kubernetes": {"envoyDeployment": {"pod": {"annotations": {
            "traffic.sidecar.istio.io/includeInboundPorts": ""}}}}}}},
        "httproutes": [_httproute()],
        "virtualservices": [_virtualservice()],
        "peerauthentication": {"spec": {"mtls": {"mode": "STRICT"}}},
    }


def test_a_complete_setup_has_no_findings():
    assert verify_config_findings(_observed(), EXPECTED) == []


@pytest.mark.parametrize("mutate, expected_fragment", [
    (lambda o: o["teg_namespace"]["metadata"].update(labels={}), "label istio-injection=None, expected 'enabled'"),
    (lambda o: o["service"]["spec"]["ports"][0].pop("appProtocol"),
     "Service envoy-gateway-system/envoy-gateway port 18000 (grpc) has appProtocol None, expected 'tls'"),
    (lambda o: o["service"]["spec"].update(ports=[]), "has no port 18000"),
    (lambda o: o["ratelimit_service"]["spec"]["ports"][0].pop("appProtocol"),
     "Service envoy-gateway-system/envoy-ratelimit port 8081 (http) has appProtocol None, expected 'tls'"),
    (lambda o: o["ratelimit_service"]["spec"].update(ports=[]), "has no port 8081: set verify_ratelimit_service_port"),
    (lambda o: o.update(gatewayclass=None), "GatewayClass teg does not exist"),
    (lambda o: o["gatewayclass"].update(parameters_ref=None), "references no EnvoyProxy"),
    (lambda o: o.update(envoyproxy=None), "EnvoyProxy envoy-gateway-system/teg-envoy-proxy, which GatewayClass teg"),
    (lambda o: o["envoyproxy"]["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"].update(annotations={}),
     "includeInboundPorts='<unset>', expected ''"),
    (lambda o: o["envoyproxy"]["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"].update(
        annotations={"traffic.sidecar.istio.io/includeInboundPorts": "*"}), "includeInboundPorts='*', expected ''"),
    (lambda o: o.update(httproutes=[], virtualservices=[]), "app httpbin has no HTTPRoute"),
    (lambda o: o.update(virtualservices=[]), "no VirtualService bound to mesh matches"),
    (lambda o: o.update(virtualservices=[_virtualservice(port=80)]), "the two layers disagree"),
    (lambda o: o.update(virtualservices=[_virtualservice(), _virtualservice(host="other.example.com")]),
     "matches other.example.com/httpbin but no managed HTTPRoute"),
    (lambda o: o.update(peerauthentication=None), "PeerAuthentication istio-system/default does not exist"),
    (lambda o: o.update(peerauthentication={"spec": {"mtls": {"mode": "PERMISSIVE"}}}), "mode 'PERMISSIVE', expected 'STRICT'"),
])
def test_each_broken_piece_is_one_finding_naming_it(mutate, expected_fragment):
    observed = _observed()
    mutate(observed)
    findings = verify_config_findings(observed, EXPECTED)
    assert len(findings) == 1, findings
    assert expected_fragment in findings[0]
    assert "\n" not in findings[0]


def test_no_ratelimit_service_is_no_finding():
    # Envoy Gateway removes it while global rate limiting is off; and an empty name skips the check.
    observed = _observed()
    observed["ratelimit_service"] = None
    assert verify_config_findings(observed, EXPECTED) == []
    observed = _observed()
    observed["ratelimit_service"]["spec"]["ports"] = []
    assert verify_config_findings(observed, dict(EXPECTED, ratelimit_service="")) == []


def test_a_missing_namespace_is_reported_alone():
    observed = _observed()
    observed["teg_namespace"] = None
    assert verify_config_findings(observed, EXPECTED) == [
        "Namespace envoy-gateway-system does not exist: install TEG there or set verify_teg_namespace"]


def test_a_revision_expects_the_rev_label():
    expected = dict(EXPECTED, injection_labels={"istio.io/rev": "canary"})
    findings = verify_config_findings(_observed(), expected)
    # istio-injection would win over the revision: it must go too.
    assert findings == ["Namespace envoy-gateway-system has label istio-injection='enabled', expected no such label: "
                        "run the teg_istio_prep role",
                        "Namespace envoy-gateway-system has label istio.io/rev=None, expected 'canary': "
                        "run the teg_istio_prep role"]


def test_a_namespace_on_the_owners_revision_is_in_the_mesh_where_no_revision_is_asked_for():
    observed = _observed()
    observed["teg_namespace"]["metadata"]["labels"] = {"istio.io/rev": "stable"}
    assert verify_config_findings(observed, EXPECTED) == []
    observed["teg_namespace"]["metadata"]["labels"] = {"team": "a"}
    assert verify_config_findings(observed, EXPECTED) == [
        "Namespace envoy-gateway-system has label istio-injection=None, expected 'enabled': run the teg_istio_prep role"]


def test_service_routing_needs_routing_type_and_no_virtualservices():
    expected = dict(EXPECTED, routing="service")
    observed = _observed()
    observed["virtualservices"] = []
    assert any("routingType None, expected 'Service'" in f for f in verify_config_findings(observed, expected))
    observed["envoyproxy"]["spec"]["routingType"] = "Service"
    assert verify_config_findings(observed, expected) == []


def test_without_mtls_expectation_the_policy_is_not_read():
    observed = _observed()
    observed["peerauthentication"] = None
    assert verify_config_findings(observed, dict(EXPECTED, peerauthentication=None)) == []


def _policy(name, namespace, mode, selector=None):
    spec = {"mtls": {"mode": mode}}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return {"kind": "PeerAuthentication", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_a_narrower_policy_keeping_traffic_permissive_under_strict_is_a_finding_naming_it():
    mesh_wide = dict(_policy("mesh", "istio-system", "STRICT"))
    observed = dict(_observed(), peerauthentication=mesh_wide, peerauthentications=[
        mesh_wide, _policy("lenient", "httpbin", "PERMISSIVE"), _policy("off", "other", "DISABLE"),
        _policy("webhook", NS, "DISABLE", selector={"app": "envoy-gateway"})])
    expected = dict(EXPECTED, peerauthentication=dict(EXPECTED["peerauthentication"], namespaces=[NS, "httpbin"]))
    (finding,) = verify_config_findings(observed, expected)
    assert finding.startswith("mesh-wide STRICT does not reach all traffic of the mesh namespaces: PeerAuthentication "
                              "envoy-gateway-system/webhook (workload app=envoy-gateway DISABLE); "
                              "httpbin/lenient (namespace-wide PERMISSIVE) keep(s) it PERMISSIVE or DISABLE; ")
    assert "other/off" not in finding
    # Declared as intended exceptions (strict_mtls_namespace_policies): no finding.
    declared = dict(expected["peerauthentication"], exceptions=[("httpbin", "lenient"), (NS, "webhook")])
    assert verify_config_findings(observed, dict(EXPECTED, peerauthentication=declared)) == []
    # Under a mesh-wide PERMISSIVE that is asked for, they are no exception to anything.
    permissive = dict(_policy("mesh", "istio-system", "PERMISSIVE"))
    observed.update(peerauthentication=permissive)
    assert verify_config_findings(observed, dict(EXPECTED, peerauthentication=dict(
        expected["peerauthentication"], mode="PERMISSIVE"))) == []


def test_the_mesh_wide_policy_is_named_as_found():
    observed = dict(_observed(), peerauthentication=_policy("mesh", "istio-system", "PERMISSIVE"))
    assert verify_config_findings(observed, EXPECTED) == [
        "PeerAuthentication istio-system/mesh has mode 'PERMISSIVE', expected 'STRICT': run the strict_mtls role"]


def test_status_reports_conditions_and_unmeshed_pods():
    observed = {
        "gatewayclass_object": {"status": {"conditions": [{"type": "Accepted", "status": "False",
                                                          "reason": "InvalidParameters"}]}},
        "gateways": [{"kind": "Gateway", "metadata": {"name": "apps", "namespace": NS},
                      "status": {"conditions": [{"type": "Programmed", "status": "True"}]}}],
        "httproutes": [dict(_httproute(), status={"parents": [{"conditions": [
            {"type": "Accepted", "status": "True"}, {"type": "ResolvedRefs", "status": "False"}]}]})],
        "mesh_pods": [
            {"kind": "Pod", "metadata": {"name": "a", "namespace": NS}, "spec": {"containers": [{"name": "envoy"}]}},
            {"kind": "Pod", "metadata": {"name": "b", "namespace": NS},
             "spec": {"containers": [{"name": "envoy"}], "initContainers": [{"name": "istio-proxy"}]}},
            # Not serving: the old pod of a rollout that just completed, terminating; a finished (evicted) one.
            {"kind": "Pod", "metadata": {"name": "old", "namespace": NS, "deletionTimestamp": "2026-12-05T14:00:00Z"},
             "spec": {"containers": [{"name": "envoy"}]}},
            {"kind": "Pod", "metadata": {"name": "evicted", "namespace": NS}, "status": {"phase": "Failed"},
             "spec": {"containers": [{"name": "envoy"}]}},
        ],
    }
    findings = verify_status_findings(observed, EXPECTED)
    assert findings == [
        "GatewayClass teg is not Accepted (InvalidParameters): check the Envoy Gateway controller logs and the "
        "EnvoyProxy it references",
        "HTTPRoute httpbin/httpbin is not ResolvedRefs by its Gateway",
        "pods without an istio-proxy sidecar: Pod envoy-gateway-system/a; run the teg_restart role (and check the "
        "namespace's injection label)",
    ]


def _labelled(obj, gateway="apps", gateway_namespace=NS):
    obj["metadata"].setdefault("labels", {}).update({
        "app.kubernetes.io/managed-by": "teg.istio", "teg.istio/gateway": gateway,
        "teg.istio/gateway-namespace": gateway_namespace})
    return obj


def test_routes_are_matched_to_apps_by_gateway_as_well_as_by_name():
    expected = dict(EXPECTED, gateway={"name": "apps", "namespace": NS})
    # The only HTTPRoute of app httpbin was made for another Gateway: this Gateway's app has none.
    other = _labelled(_httproute(prefix="/other", host="other.example.com"), gateway="other")
    observed = dict(_observed(), httproutes=[other])
    findings = verify_config_findings(observed, expected)
    assert "app httpbin has no HTTPRoute in namespace httpbin: run the expose_app role" in findings
    # ... and that other Gateway's route is not judged against this Gateway's VirtualServices.
    assert not [f for f in findings if "other.example.com" in f], findings


def test_another_gateways_virtualservices_are_not_judged_against_this_gateways_routes():
    expected = dict(EXPECTED, gateway={"name": "apps", "namespace": NS})
    theirs = _labelled(_virtualservice(prefix="/shop/", host="shop.example.com"), gateway="shop")
    observed = dict(_observed(), httproutes=[_labelled(_httproute())],
                    virtualservices=[_labelled(_virtualservice()), theirs])
    assert verify_config_findings(observed, expected) == []


def test_a_parameters_ref_without_namespace_names_the_envoyproxy_in_default():
    # Envoy Gateway reads an unset namespace as "default" (docs/architecture.md).
    observed = dict(_observed(), envoyproxy=None)
    observed["gatewayclass"]["parameters_ref"] = {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                                  "name": "teg-envoy-proxy", "namespace": None}
    findings = verify_config_findings(observed, EXPECTED)
    assert any(f.startswith("EnvoyProxy default/teg-envoy-proxy, which GatewayClass teg references") for f in findings)


def _job_pod(containers, phase="Running", owner_kind="Job", init=()):
    return {"metadata": {"name": "teg-certgen-x7k2p", "namespace": NS,
                         "ownerReferences": [{"kind": owner_kind, "name": "teg-certgen"}]},
            "spec": {"containers": [{"name": c} for c in containers],
                     "initContainers": [dict({"name": c}, restartPolicy="Always") for c in init]},
            "status": {"phase": phase}}


@pytest.mark.parametrize("pod, found", [
    (_job_pod(["envoy-gateway-certgen", "istio-proxy"]), True),
    (_job_pod(["envoy-gateway-certgen", "istio-proxy"], phase="Pending"), True),
    (_job_pod(["envoy-gateway-certgen"]), False),  # sidecar.istio.io/inject: "false"
    (_job_pod(["envoy-gateway-certgen"], init=["istio-proxy"]), False),  # a native sidecar
    (_job_pod(["envoy-gateway-certgen", "istio-proxy"], phase="Succeeded"), False),
    (_job_pod(["envoy-gateway", "istio-proxy"], owner_kind="ReplicaSet"), False),
])
def test_a_job_pod_held_by_its_sidecar_is_named_with_the_helm_value(pod, found):
    findings = verify_config_findings(dict(_observed(), teg_pods=[pod]), EXPECTED)
    expected = ("Pod envoy-gateway-system/teg-certgen-x7k2p of Job teg-certgen has an istio-proxy sidecar that never "
                "exits, so the Job never completes (a TEG install or upgrade waits on its certgen hook): set TEG's Helm "
                "value certgen.job.pod.labels to {sidecar.istio.io/inject: 'false'}, then delete the Job")
    assert findings == ([expected] if found else []), findings


def _findings_of(checks):
    return [finding for check in checks for finding in check["findings"]]


def test_the_checks_report_exactly_the_findings_and_name_the_failed_one():
    """verify_checks is verify_config_findings (and at level status verify_status_findings) cut into named checks:
    nothing lost, nothing added; the broken piece fails its own check alone."""
    observed = _observed()
    checks = verify_checks(observed, EXPECTED)
    assert [c["name"] for c in checks] == ["TEG prepared for the mesh", "no sidecar holding TEG's certgen Job",
                                           "edge and mesh routes agree", "mesh-wide mTLS mode"]
    assert _findings_of(checks) == [] == verify_config_findings(observed, EXPECTED)
    observed["service"]["spec"]["ports"][0].pop("appProtocol")
    checks = verify_checks(observed, EXPECTED, level="status")
    assert _findings_of(checks) == verify_config_findings(observed, EXPECTED) + verify_status_findings(observed, EXPECTED)
    assert [c["name"] for c in checks if c["findings"]][0] == "TEG prepared for the mesh"
    assert checks[-1]["name"] == "controllers report the routes programmed, pods have sidecars"


@pytest.mark.parametrize("mutate, expected_fragment", test_each_broken_piece_is_one_finding_naming_it.pytestmark[0].args[1])
def test_every_finding_belongs_to_exactly_one_check(mutate, expected_fragment):
    observed = _observed()
    mutate(observed)
    checks = verify_checks(observed, EXPECTED)
    assert _findings_of(checks) == verify_config_findings(observed, EXPECTED)
    assert len([c for c in checks if any(expected_fragment in f for f in c["findings"])]) == 1


def test_ambient_adds_its_check_and_no_mtls_expectation_drops_that_one():
    expected = dict(EXPECTED, mesh_mode="ambient", peerauthentication=None)
    names = [c["name"] for c in verify_checks(_observed(), expected)]
    assert "ambient data plane and enrolment" in names and "mesh-wide mTLS mode" not in names
    assert _findings_of(verify_checks(_observed(), expected)) == verify_config_findings(_observed(), expected)
