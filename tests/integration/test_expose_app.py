"""expose_app against the local control plane (flavour from $MATRIX): the objects with the API
versions the flavour serves, idempotence and check mode witnessed by the audit log, pruning, 100
apps in one run, service routing, and every bad input refused in one line before any write.

Istio's CRDs are applied here from the flavour's pinned upstream copy, in the CRD folder the
launcher resolved for this cluster (what the istio_install role's `base` chart installs), so that
this role is tested on its own."""

import json
import sys

import pytest

from conftest import JSON_CALLBACK, REPO, assert_one_line_failure, task_results

sys.path.insert(0, str(REPO / "tests" / "localcp"))
import localcp  # noqa: E402  (the flavour -> CRD folder table lives there)

PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "expose_app.yml")
API = {
    "current": {"gateway": "gateway.networking.k8s.io/v1", "vs": "networking.istio.io/v1"},
    "legacy": {"gateway": "gateway.networking.k8s.io/v1beta1", "vs": "networking.istio.io/v1beta1"},
}
TEG_NS = "envoy-gateway-system"
HTTPBIN = {"name": "httpbin", "namespace": "httpbin", "port": 8000, "hostnames": ["www.example.com"],
           "path_prefix": "/httpbin"}
SAMPLE = {"expose_app_sample": True, "expose_app_apps": [HTTPBIN]}
MANAGED = "app.kubernetes.io/managed-by=teg.istio"


@pytest.fixture(scope="module")
def flavour(cluster):
    """A cluster as the TEG fixture left it, plus the flavour's Istio CRDs."""
    cluster.localcp("reset")
    _istio_crds(cluster)
    return cluster.matrix


def _istio_crds(cluster):
    path = cluster.crds / localcp.MATRIX[cluster.matrix]["istio"] / "crd-all.gen.yaml"
    cluster.kubectl("apply", "--server-side", "-f", str(path))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/virtualservices.networking.istio.io")


@pytest.fixture
def run(play):
    def _run(extra_vars, **kwargs):
        return play(PLAYBOOK, extra_vars=extra_vars, use_site_vars=False, **kwargs)
    return _run


def _get(cluster, kind, name=None, namespace=None, selector=None):
    args = ["get", kind, "-o", "json"]
    if name:
        args.insert(2, name)
    args += ["-n", namespace] if namespace else ["-A"]
    if selector:
        args += ["-l", selector]
    proc = cluster.kubectl(*args, check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    return json.loads(proc.stdout)


def _items(cluster, kind, selector=MANAGED):
    return (_get(cluster, kind, selector=selector) or {}).get("items", [])


def _names(items):
    return sorted("%s/%s" % (i["metadata"]["namespace"], i["metadata"]["name"]) for i in items)


def _ok(result):
    assert result.rc == 0, result.output[-4000:]
    return result


def _versions(*objects):
    return {o["metadata"]["uid"]: (o["metadata"]["generation"] if o["kind"] == "Deployment"
                                   else o["metadata"]["resourceVersion"]) for o in objects}


def test_check_mode_then_apply_then_nothing_to_do(flavour, cluster, run):
    check = run(SAMPLE, check=True, diff=True)
    assert check.rc == 0, check.output[-3000:]
    assert check.writes == [], check.describe_writes()
    assert check.recap()["changed"] > 0
    assert "would create ServiceAccount httpbin/httpbin" in check.output
    assert _get(cluster, "namespace", "httpbin") is None
    assert _items(cluster, "httproutes.gateway.networking.k8s.io") == []

    first = run(SAMPLE, diff=True)
    assert first.rc == 0, first.output[-3000:]
    assert first.recap()["changed"] > 0
    api = API[cluster.matrix]

    ns = _get(cluster, "namespace", "httpbin")
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    svc = _get(cluster, "service", "httpbin", "httpbin")
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(8000, 80)]
    dep = _get(cluster, "deployment", "httpbin", "httpbin")
    assert dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 80

    gw = _get(cluster, "gateways.gateway.networking.k8s.io", "apps", TEG_NS)
    assert gw["apiVersion"] == api["gateway"]
    assert gw["spec"]["gatewayClassName"] == "teg"
    [listener] = gw["spec"]["listeners"]
    assert (listener["port"], listener["protocol"]) == (80, "HTTP")
    assert listener["allowedRoutes"]["namespaces"]["from"] == "Selector"

    route = _get(cluster, "httproutes.gateway.networking.k8s.io", "httpbin", "httpbin")
    assert route["apiVersion"] == api["gateway"]
    assert route["metadata"]["labels"]["teg.istio/app"] == "httpbin"
    assert route["spec"]["hostnames"] == ["www.example.com"]
    assert route["spec"]["parentRefs"][0]["name"] == "apps"
    [rule] = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/httpbin"}}]
    assert "filters" not in rule
    assert rule["backendRefs"][0]["name"] == "httpbin" and rule["backendRefs"][0]["port"] == 8000

    vs = _get(cluster, "virtualservices.networking.istio.io", "apps-www.example.com", TEG_NS)
    assert vs["apiVersion"] == api["vs"]
    assert vs["spec"]["hosts"] == ["www.example.com"] and vs["spec"]["gateways"] == ["mesh"]
    assert vs["spec"]["exportTo"] == ["."]
    assert [(h["match"][0]["uri"], h["rewrite"]["uri"]) for h in vs["spec"]["http"]] == [
        ({"prefix": "/httpbin/"}, "/"), ({"exact": "/httpbin"}, "/")]
    assert vs["spec"]["http"][0]["route"][0]["destination"] == {
        "host": "httpbin.httpbin.svc.cluster.local", "port": {"number": 8000}}

    # The Deployment's resourceVersion moves with its rollout status (the controller's writes, not
    # ours); its generation moves only with its spec.
    versions = _versions(gw, route, vs, svc, dep)
    second = run(SAMPLE, diff=True)
    assert second.rc == 0, second.output[-3000:]
    assert second.recap()["changed"] == 0
    assert second.writes == [], second.describe_writes()

    check_again = run(SAMPLE, check=True, diff=True)
    _ok(check_again)
    assert check_again.recap()["changed"] == 0
    assert check_again.writes == [], check_again.describe_writes()
    after = [_get(cluster, "gateways.gateway.networking.k8s.io", "apps", TEG_NS),
             _get(cluster, "httproutes.gateway.networking.k8s.io", "httpbin", "httpbin"),
             _get(cluster, "virtualservices.networking.istio.io", "apps-www.example.com", TEG_NS),
             _get(cluster, "service", "httpbin", "httpbin"), _get(cluster, "deployment", "httpbin", "httpbin")]
    assert _versions(*after) == versions


def test_a_changed_field_is_put_back_and_only_that_object_is_written(flavour, cluster, run):
    _ok(run(SAMPLE))
    cluster.kubectl("patch", "virtualservices.networking.istio.io", "apps-www.example.com", "-n", TEG_NS,
                    "--type=merge", "-p", '{"spec": {"exportTo": ["*"]}}')
    check = run(SAMPLE, check=True, diff=True)
    _ok(check)
    assert check.writes == []
    assert check.recap()["changed"] == 1
    assert "exportTo" in check.output  # the --diff of the dry run shows the field that differs
    fixed = run(SAMPLE)
    _ok(fixed)
    assert [(e["verb"], e["objectRef"]["resource"]) for e in fixed.writes] == [("patch", "virtualservices")]
    vs = _get(cluster, "virtualservices.networking.istio.io", "apps-www.example.com", TEG_NS)
    assert vs["spec"]["exportTo"] == ["."]


def test_a_removed_app_is_pruned(flavour, cluster, run):
    other = dict(HTTPBIN, name="httpbin-alt", service="httpbin", path_prefix="/alt", hostnames=["alt.example.com"])
    both = {"expose_app_sample": True, "expose_app_apps": [HTTPBIN, other]}
    both_run = run(both)
    assert both_run.rc == 0, both_run.output[-3000:]
    assert _names(_items(cluster, "httproutes.gateway.networking.k8s.io")) == ["httpbin/httpbin", "httpbin/httpbin-alt"]
    assert _names(_items(cluster, "virtualservices.networking.istio.io")) == [
        TEG_NS + "/apps-alt.example.com", TEG_NS + "/apps-www.example.com"]

    check = run(SAMPLE, check=True)
    _ok(check)
    assert check.writes == [], check.describe_writes()
    assert check.recap()["changed"] >= 1
    assert {e["objectRef"]["resource"] for e in check.dry_runs if e["verb"] == "delete"} == {
        "httproutes", "virtualservices"}
    assert len(_items(cluster, "httproutes.gateway.networking.k8s.io")) == 2

    pruned = run(SAMPLE)
    assert pruned.rc == 0, pruned.output[-3000:]
    # Both apps live in namespace httpbin, so the Gateway's allowedRoutes stay as they were.
    assert sorted((e["verb"], e["objectRef"]["resource"], e["objectRef"]["name"]) for e in pruned.writes) == [
        ("delete", "httproutes", "httpbin-alt"), ("delete", "virtualservices", "apps-alt.example.com")]
    assert _names(_items(cluster, "httproutes.gateway.networking.k8s.io")) == ["httpbin/httpbin"]
    assert _names(_items(cluster, "virtualservices.networking.istio.io")) == [TEG_NS + "/apps-www.example.com"]
    again = run(SAMPLE)
    _ok(again)
    assert again.writes == [] and again.recap()["changed"] == 0


def test_hundred_apps_in_one_run(flavour, cluster, run):
    apps = [dict(HTTPBIN, name="app%03d" % i, service="httpbin", hostnames=["app%03d.example.com" % i], path_prefix="/")
            for i in range(100)]
    many = {"expose_app_sample": True, "expose_app_apps": apps}
    first = run(many)
    assert first.rc == 0, first.output[-3000:]
    # One teg.istio.k8s_objects call (kubernetes.core.k8s's runner) for all objects: a single task creates them.
    assert first.output.count("apply the Gateway, routes and VirtualServices that differ] ***") == 1
    routes = _items(cluster, "httproutes.gateway.networking.k8s.io")
    vss = _items(cluster, "virtualservices.networking.istio.io")
    assert len(routes) == 100 and len(vss) == 100
    assert {r["metadata"]["name"] for r in routes} == {"app%03d" % i for i in range(100)}
    creates = [e for e in first.writes if e["verb"] == "create"]
    assert len([e for e in creates if e["objectRef"]["resource"] == "httproutes"]) == 100
    assert len([e for e in creates if e["objectRef"]["resource"] == "virtualservices"]) == 100
    second = run(many)
    _ok(second)
    assert second.recap()["changed"] == 0
    assert second.writes == [], second.describe_writes()[:10]
    back = run(SAMPLE)
    _ok(back)
    assert _names(_items(cluster, "httproutes.gateway.networking.k8s.io")) == ["httpbin/httpbin"]


def test_service_routing(flavour, cluster, run):
    svc_mode = dict(SAMPLE, expose_app_routing="service")
    if cluster.matrix == "legacy":
        result = run(svc_mode, env=JSON_CALLBACK)
        assert result.writes == [], result.describe_writes()
        assert_one_line_failure(result, cause=["routingType", "config.gateway.envoyproxy.io/v1alpha1"],
                                fix=["upgrade TEG or use expose_app_routing: virtualservice"])
        return
    _ok(run(SAMPLE))
    result = run(svc_mode, diff=True)
    assert result.rc == 0, result.output[-3000:]
    ep = _get(cluster, "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", TEG_NS)
    assert ep["spec"]["routingType"] == "Service"
    assert ep["spec"]["logging"] == {"level": {"default": "warn"}}  # TEG's own settings kept
    assert ep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    route = _get(cluster, "httproutes.gateway.networking.k8s.io", "httpbin", "httpbin")
    assert route["spec"]["rules"][0]["filters"] == [{"type": "URLRewrite", "urlRewrite": {
        "hostname": "httpbin.httpbin.svc.cluster.local",
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
    assert _items(cluster, "virtualservices.networking.istio.io") == []
    again = run(svc_mode)
    _ok(again)
    assert again.writes == [] and again.recap()["changed"] == 0

    back = run(SAMPLE)
    assert back.rc == 0, back.output[-3000:]
    ep = _get(cluster, "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", TEG_NS)
    assert "routingType" not in ep["spec"] and ep["spec"]["logging"] == {"level": {"default": "warn"}}
    route = _get(cluster, "httproutes.gateway.networking.k8s.io", "httpbin", "httpbin")
    assert "filters" not in route["spec"]["rules"][0]
    assert _names(_items(cluster, "virtualservices.networking.istio.io")) == [TEG_NS + "/apps-www.example.com"]


BAD_NS = "h4-bad"


@pytest.fixture(scope="module")
def bad_backends(flavour, cluster):
    """Backends that break the procedure's caveats, made with kubectl before the plays run."""
    def svc(name, port, selector=None):
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": BAD_NS},
                "spec": {"selector": selector or {"app": name}, "ports": [port]}}
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BAD_NS}},
        svc("good", {"name": "http", "port": 8000, "targetPort": 80}),
        svc("h2proto", {"name": "web", "port": 8000, "targetPort": 80, "appProtocol": "http2"}),
        svc("h2c", {"name": "web", "port": 8000, "targetPort": 80, "appProtocol": "kubernetes.io/h2c"}),
        {"apiVersion": API[cluster.matrix]["gateway"], "kind": "HTTPRoute",
         "metadata": {"name": "theirs", "namespace": BAD_NS},
         "spec": {"rules": [{"backendRefs": [{"name": "good", "port": 8000}]}]}},
    ]
    cluster.kubectl("apply", "-f", "-", stdin="\n".join(json.dumps(o) for o in objects))
    return BAD_NS


def _app(service="good", **kw):
    app = {"name": kw.pop("name", service), "namespace": BAD_NS, "service": service, "port": 8000,
           "hostnames": ["bad.example.com"], "path_prefix": "/" + service}
    app.update(kw)
    return app


# case -> (apps or extra vars, the cause, the fix). The role run alone; the http2 port name, the http2 container port,
# two apps on one host and prefix and an invalid hostname are refused through site.yml (test_bad_input.py).
BAD_INPUTS = {
    "service missing": ([_app("nosuch")], "Service h4-bad/nosuch not found", "create it, or set service/namespace"),
    "namespace missing": ([dict(_app(), namespace="h4-nowhere")], "namespace h4-nowhere does not exist",
                          "create them, or set namespace/service"),
    "port not on service": ([_app(port=9999)], "Service h4-bad/good has no port 9999 (ports: 8000)",
                            "set port to one of them"),
    "http2 appProtocol": ([_app("h2proto")], "Service h4-bad/h2proto port 8000 declares HTTP/2 (appProtocol http2)",
                          "drop appProtocol http2"),
    "h2c appProtocol": ([_app("h2c")], "declares HTTP/2 (appProtocol kubernetes.io/h2c)", "drop appProtocol"),
    "wildcard not leftmost": ([_app(hostnames=["www.*.example.com"])], "wildcard that is not the whole leftmost",
                              "fix it in hostnames"),
    "route of someone else": ([_app(name="theirs")], "HTTPRoute h4-bad/theirs exists and is not managed by teg.istio",
                              "rename the app or the Gateway, or remove that object"),
    "gatewayclass missing": ({"expose_app_apps": [_app()], "expose_app_gateway_class": "nosuch"},
                             "GatewayClass nosuch does not exist",
                             "set expose_app_gateway_class to an existing GatewayClass"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_in_one_line_before_any_write(case, bad_backends, cluster, run):
    given, cause, fix = BAD_INPUTS[case]
    extra_vars = given if isinstance(given, dict) else {"expose_app_apps": given}
    result = run(extra_vars, env=JSON_CALLBACK)
    assert_one_line_failure(result, cause=[cause], fix=[fix])
    assert result.writes == [], result.describe_writes()
    assert _get(cluster, "namespace", BAD_NS)["metadata"].get("labels", {}).get("istio-injection") is None


AMBIENT = dict(SAMPLE, expose_app_mesh_mode="ambient")
DATAPLANE = "istio.io/dataplane-mode"


def _ambient_verify(play, tmp_path):
    """teg.istio.mesh_verify in ambient mode, its findings returned rather than failed on."""
    playbook = tmp_path / "verify-ambient.yml"
    playbook.write_text(json.dumps([{
        "name": "Verify", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Check the ambient state",
                   "teg.istio.mesh_verify": {"apps": [HTTPBIN], "mesh_mode": "ambient", "mtls_mode": "",
                                             "fail_on_findings": False}}]}]))
    result = play(str(playbook), use_site_vars=False, env=JSON_CALLBACK)
    _ok(result)
    (found,) = task_results(result, "Check the ambient state")
    assert isinstance(found["findings"], list), found
    return found["findings"]


def test_switching_to_ambient_and_back(flavour, cluster, run, play, tmp_path):
    """Sidecar -> ambient: the VirtualService goes, the namespace is relabelled, the routing is the Service's;
    a rerun writes nothing and --check tells the truth; back to sidecar restores both. verify in ambient sees
    the state (the other roles' ambient parts are set by hand: TEG's namespace label, the DaemonSets)."""
    if cluster.matrix != "current":
        pytest.skip("ambient runs on the current flavour only (Envoy Gateway >= v1.1 for routingType)")
    _ok(run(SAMPLE))
    assert _names(_items(cluster, "virtualservices.networking.istio.io")) == [TEG_NS + "/apps-www.example.com"]

    check = run(AMBIENT, check=True, diff=True)
    _ok(check)
    assert check.writes == [], check.describe_writes()
    assert check.recap()["changed"] > 0
    assert _get(cluster, "namespace", "httpbin")["metadata"]["labels"].get("istio-injection") == "enabled"

    switched = run(AMBIENT, diff=True)
    _ok(switched)
    labels = _get(cluster, "namespace", "httpbin")["metadata"]["labels"]
    assert labels.get(DATAPLANE) == "ambient" and "istio-injection" not in labels, labels
    assert _items(cluster, "virtualservices.networking.istio.io") == []
    assert _get(cluster, "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", TEG_NS)["spec"]["routingType"] == "Service"
    rule = _get(cluster, "httproutes.gateway.networking.k8s.io", "httpbin", "httpbin")["spec"]["rules"][0]
    assert rule["filters"][0]["urlRewrite"]["hostname"] == "httpbin.httpbin.svc.cluster.local"

    again = run(AMBIENT)
    _ok(again)
    assert again.writes == [], again.describe_writes()
    assert again.recap()["changed"] == 0
    check_again = run(AMBIENT, check=True)
    _ok(check_again)
    assert check_again.recap()["changed"] == 0 and check_again.writes == []

    # What teg_istio_prep and istio_install do in ambient, set directly; then verify sees nothing amiss.
    cluster.kubectl("label", "namespace", TEG_NS, "istio-injection-", DATAPLANE + "=ambient", "--overwrite")
    provider = _get(cluster, "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", TEG_NS)["spec"].get("provider")
    cluster.kubectl("patch", "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", "-n", TEG_NS, "--type=merge",
                    "-p", json.dumps({"spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {
                        "pod": {"annotations": {"ambient.istio.io/bypass-inbound-capture": "true"}}}}}}}))
    cluster.kubectl("create", "namespace", "istio-system", check=False)
    for name in ("ztunnel", "istio-cni-node"):
        cluster.kubectl("create", "-n", "istio-system", "-f", "-", stdin=json.dumps({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "registry.invalid/never-pulled:1"}]}}}}))
    try:
        # TEG's Services have no appProtocol tls here (teg_istio_prep has not run): the rest is in place.
        findings = _ambient_verify(play, tmp_path)
        assert [f for f in findings if "appProtocol" not in f] == [], findings
        # A namespace put back for injection is named, with the fix.
        cluster.kubectl("label", "namespace", "httpbin", "istio-injection=enabled")
        findings = _ambient_verify(play, tmp_path)
        wanted = "Namespace httpbin has the sidecar injection label istio-injection=enabled"
        assert [f for f in findings if f.startswith(wanted)], findings
        cluster.kubectl("label", "namespace", "httpbin", "istio-injection-")
    finally:
        cluster.kubectl("delete", "daemonsets", "ztunnel", "istio-cni-node", "-n", "istio-system", check=False)
        cluster.kubectl("label", "namespace", TEG_NS, DATAPLANE + "-", check=False)
        restore = ({"op": "replace", "path": "/spec/provider", "value": provider} if provider
                   else {"op": "remove", "path": "/spec/provider"})
        cluster.kubectl("patch", "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", "-n", TEG_NS, "--type=json",
                        "-p", json.dumps([restore]), check=False)

    back = run(SAMPLE)
    _ok(back)
    labels = _get(cluster, "namespace", "httpbin")["metadata"]["labels"]
    assert labels.get("istio-injection") == "enabled" and DATAPLANE not in labels, labels
    assert _names(_items(cluster, "virtualservices.networking.istio.io")) == [TEG_NS + "/apps-www.example.com"]
    assert "routingType" not in _get(cluster, "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", TEG_NS)["spec"]
