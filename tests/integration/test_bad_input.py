"""Bad input to site.yml as users run it: each gives rc != 0 and one line that names the cause and the fix. Where
the run could write (the playbook's own credentials, on a cluster site.yml writes to: the first test shows it), not
one write reaches the API server (audit log); connection settings that cannot reach or authenticate to the API
server cannot write at all, so for them only the line is asserted. docs/bad-input.md lists every row."""

import json

import pytest

from conftest import JSON_CALLBACK, MATRIX, assert_one_line_failure

TEG_NS = "envoy-gateway-system"
BAD_NS = "bad-input"
INCLUDE_INBOUND = "traffic.sidecar.istio.io/includeInboundPorts"


def _site(play, extra_vars=None, env=None):
    return play("site.yml", extra_vars=extra_vars, env=dict(JSON_CALLBACK, **(env or {})))


def _assert_refused(run, cause, fix):
    line = assert_one_line_failure(run, cause, fix)
    assert run.writes == [], run.describe_writes()
    return line


def _service(name, port):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": BAD_NS},
            "spec": {"selector": {"app": name}, "ports": [port]}}


@pytest.fixture(scope="module", autouse=True)
def fixture_state(cluster):
    """The cluster as cluster-up left it, and backends that break the procedure's caveats: a Service port and a
    pod's container port that declare HTTP/2; the pod has no sidecar (its namespace is not in the mesh)."""
    cluster.localcp("reset")
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BAD_NS}},
        _service("good", {"name": "http", "port": 8000, "targetPort": 80}),
        _service("h2name", {"name": "http2-web", "port": 8000, "targetPort": 80}),
        _service("h2pod", {"name": "http", "port": 8000, "targetPort": 80}),
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "h2pod-0", "namespace": BAD_NS, "labels": {"app": "h2pod"}},
         "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                                  "ports": [{"name": "http2", "containerPort": 80}]}]}},
    ]
    cluster.kubectl("apply", "-f", "-", stdin="\n".join(json.dumps(o) for o in objects))


def test_the_runs_below_start_where_site_yml_writes(play):
    """What makes "no write" mean something: from this state, a site.yml with good input would write."""
    run = play("site.yml", check=True)
    assert run.rc == 0, run.output[-4000:]
    assert run.recap()["changed"] > 0 and run.writes == [], run.describe_writes()


def _app(service, **kw):
    return dict({"name": service, "namespace": BAD_NS, "service": service, "port": 8000,
                 "hostnames": ["bad.example.com"], "path_prefix": "/" + service}, **kw)


@pytest.mark.parametrize("extra_vars, cause, fix", [
    ({"teg_istio_prep_envoyproxy_mode": "replace"},
     ["role teg_istio_prep: value of teg_istio_prep_envoyproxy_mode", "got: replace"],
     ["must be one of: auto, create, merge"]),
    ({"teg_istio_prep_namespace": "no-such-namespace"}, ["namespace no-such-namespace not found"],
     ["set teg_istio_prep_namespace"]),
    ({"teg_istio_prep_gatewayclass": "missing"}, ["GatewayClass missing not found"], ["set teg_istio_prep_gatewayclass"]),
    ({"teg_istio_prep_service_port": 18999}, ["has no port 18999"], ["no port is ever added"]),
    ({"expose_app_apps": [{"name": "a", "namespace": "httpbin", "service": "httpbin", "port": 8000,
                           "hostnames": ["Not_A_Host"], "path_prefix": "/a"}]}, ["hostname 'Not_A_Host'"],
     ["fix it in hostnames"]),
    # As a new user tries it: each of these used to stop only in its own role, after the roles before it
    # had written (36 writes before expose_app, 3 before istio_install). site.yml plans every role first.
    ({"expose_app_apps": [{"name": "web", "namespace": "no-such-ns", "service": "web", "port": 8000,
                           "hostnames": ["web.example.com"]}]},
     ["app web: namespace no-such-ns does not exist, so Service no-such-ns/web cannot either"],
     ["set namespace/service to an existing Service"]),
    ({"istio_install_version": "latest"}, ["istio_install_version 'latest' is not an Istio chart version"],
     ["such as 1."]),
    ({"istio_install_version": "1.2.3"}, ["chart base and istiod version 1.2.3 not found in the local chart directory"],
     ["put them there (helm pull istio/base --version 1.2.3) or set istio_install_version"]),
    # Ambient needs Istio >= 1.24: the legacy flavour's Istio is refused in one line, before any write. The role's
    # own variable: with teg_istio_mesh_mode, teg_istio_prep's plan refuses the legacy flavour first (its EnvoyProxy
    # API has no routingType, test_teg_istio_prep.py).
    ({"istio_install_mesh_mode": "ambient", "istio_install_version": "1.19.10"},
     ["istio_install_version 1.19.10 has no ambient mode that Istio supports (ambient is GA from Istio 1.24)"],
     ["set istio_install_version to 1.24 or later, or istio_install_mesh_mode (teg_istio_mesh_mode) to sidecar"]),
    ({"strict_mtls_namespace_policies": [{"namespace": "no-such-ns"}]}, ["namespace(s) no-such-ns not found"],
     ["create them, or correct strict_mtls_root_namespace / strict_mtls_namespace_policies"]),
    ({"teg_restart_deployments": ["envoy-gateway", "paused"]}, ["cannot restart paused Deployment(s) paused"],
     ["rollout resume deployment/paused"]),
    # The rows of docs/bad-input.md that were tested only on their role's own playbook, through site.yml.
    ({"expose_app_apps": [_app("h2name")]}, [f"Service {BAD_NS}/h2name port 8000 declares HTTP/2 (name http2-web)"],
     ["rename the port"]),
    ({"expose_app_apps": [_app("h2pod")]},
     [f"Pod {BAD_NS}/h2pod-0 container app port 80 declares HTTP/2 (name http2)"], ["rename the container port"]),
    ({"expose_app_apps": [_app("good"), _app("good", name="good2")]},
     ["apps good and good2 both claim host bad.example.com with path_prefix /good"],
     ["give one of them another hostname or path_prefix"]),
    ({"strict_mtls_mesh_namespaces": [TEG_NS, "httpbin", BAD_NS]},
     [f"STRICT mTLS would cut off 1 pod(s) without an istio-proxy sidecar: {BAD_NS}/h2pod-0"],
     ["restart them into the mesh", "or set strict_mtls_force: true"]),
    ({"istio_install_helm_binary": "/nonexistent/bin/helm"}, ["helm binary /nonexistent/bin/helm cannot run ("],
     ["install Helm 3"]),
    ({"teg_istio_skip_steps": ["istio_install"]}, ["istiod not found in the cluster"],
     ["run teg.istio.istio_install before teg_restart"]),
    ({"teg_istio_prep_pod_annotations": {INCLUDE_INBOUND: "", "proxy.istio.io/config": "{}"}},
     ["teg_istio_prep_pod_annotations sets proxy.istio.io/config", "teg_istio_prep_sidecar_drain auto manages"],
     ["set teg_istio_prep_sidecar_drain to none"]),
    ({"teg_istio_prep_sidecar_drain": "native", "teg_istio_prep_istio_version": "1.23.5"},
     ["teg_istio_prep_sidecar_drain native", "Istio 1.23 has no per-pod sidecar.istio.io/nativeSidecar"],
     ["set it to auto or drain_duration"]),
], ids=["invalid-variable", "namespace-missing", "gatewayclass-missing", "service-port-missing", "invalid-hostname",
        "app-namespace-missing", "istio-version-latest", "istio-chart-version-missing", "ambient-istio-too-old",
        "mtls-namespace-missing", "paused-deployment", "http2-port-name", "http2-container-port",
        "same-host-and-prefix", "unmeshed-pods", "helm-missing", "no-istiod", "drain-annotation-clash",
        "native-istio-too-old"])
def test_bad_variables_stop_before_any_write(play, cluster, extra_vars, cause, fix):
    paused = "paused" in extra_vars.get("teg_restart_deployments", [])
    if paused:
        cluster.kubectl("create", "deployment", "paused", "-n", TEG_NS, "--image=registry.invalid/paused:1")
        cluster.kubectl("rollout", "pause", "deployment/paused", "-n", TEG_NS)
    try:
        _assert_refused(_site(play, extra_vars), cause, fix)
    finally:
        if paused:
            cluster.kubectl("delete", "deployment", "paused", "-n", TEG_NS)


@pytest.mark.parametrize("env, cause, fix", [
    ({"K8S_AUTH_KUBECONFIG": "/nonexistent/kubeconfig"},
     ["no Kubernetes connection settings: kubeconfig /nonexistent/kubeconfig (from K8S_AUTH_KUBECONFIG) does not exist"],
     ["set K8S_AUTH_KUBECONFIG (or KUBECONFIG) to a kubeconfig file"]),
    ({"K8S_AUTH_CONTEXT": "no-such-context"}, ["context no-such-context is not in kubeconfig"],
     ["set K8S_AUTH_CONTEXT (or the context option) to one of its contexts"]),
], ids=["kubeconfig-missing", "context-missing"])
def test_connection_settings_that_cannot_work_are_one_line(play, env, cause, fix):
    assert_one_line_failure(_site(play, env=env), cause, fix)


def test_an_unreachable_api_server_is_one_line(play, cluster):
    run = _site(play, env={"K8S_AUTH_KUBECONFIG": "", "K8S_AUTH_HOST": "https://127.0.0.1:1",
                           "K8S_AUTH_API_KEY": "x", "K8S_AUTH_VERIFY_SSL": "false"})
    assert_one_line_failure(run, ["cannot reach the Kubernetes API server"], ["check K8S_AUTH_HOST"])


def _server_and_ca(cluster):
    config = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    return config["clusters"][0]["cluster"]["server"], config["clusters"][0]["cluster"]["certificate-authority"]


def test_a_bad_token_is_one_line_naming_the_credentials(play, cluster):
    server, ca = _server_and_ca(cluster)
    run = _site(play, env={"K8S_AUTH_KUBECONFIG": "", "K8S_AUTH_HOST": server, "K8S_AUTH_API_KEY": "not-a-token",
                           "K8S_AUTH_SSL_CA_CERT": ca, "K8S_AUTH_VERIFY_SSL": "true"})
    assert_one_line_failure(run, ["401 Unauthorized"], ["check the token"])


# Reads everything and may write the TEG namespace (site.yml's first write, teg_istio_prep's label), nothing else: the
# refusal must come before that write, from the plans' dry runs.
PARTIAL_RBAC = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "bad-input-partial"},
     "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
               {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["patch", "update"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "bad-input-partial"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bad-input-partial"},
     "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": "default"}]},
]


def test_rbac_forbidden_is_one_line_naming_verb_and_resource(play, cluster):
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", "default")
    cluster.kubectl("apply", "-f", "-", stdin="\n".join(json.dumps(o) for o in PARTIAL_RBAC))
    token = cluster.kubectl("create", "token", "nobody", "-n", "default").stdout.strip()
    server, ca = _server_and_ca(cluster)
    run = _site(play, env={"K8S_AUTH_KUBECONFIG": "", "K8S_AUTH_HOST": server, "K8S_AUTH_API_KEY": token,
                           "K8S_AUTH_SSL_CA_CERT": ca, "K8S_AUTH_VERIFY_SSL": "true"})
    _assert_refused(run, ["forbidden (403)", "system:serviceaccount:default:nobody"],
                    ["grant that verb on that resource"])
    cluster.kubectl("delete", "serviceaccount", "nobody", "-n", "default")
    cluster.kubectl("delete", "clusterrolebinding,clusterrole", "bad-input-partial")


@pytest.mark.skipif(MATRIX != "current", reason="Envoy Gateway v0.5 has no spec.shutdown: drain_duration is refused")
def test_an_unreadable_proxy_config_on_the_envoyproxy_stops_site_yml_before_any_write(play, cluster):
    """docs/bad-input.md row 31 through site.yml: TEG's EnvoyProxy carries a proxy.istio.io/config on its pods that
    is not a YAML mapping, and the drain duration is to be set from it."""
    resource, name = "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy"
    original = json.loads(cluster.kubectl("get", resource, name, "-n", TEG_NS, "-o", "json").stdout)["spec"]
    unreadable = {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {"pod": {"annotations": {
        "proxy.istio.io/config": "[1, 2]"}}}}}}
    cluster.kubectl("patch", resource, name, "-n", TEG_NS, "--type=merge", "-p", json.dumps({"spec": unreadable}))
    try:
        _assert_refused(_site(play, {"teg_istio_prep_sidecar_drain": "drain_duration"}),
                        [f"EnvoyProxy {TEG_NS}/{name}", "not a YAML mapping"], ["correct it"])
    finally:
        cluster.kubectl("patch", resource, name, "-n", TEG_NS, "--type=json",
                        "-p", json.dumps([{"op": "replace", "path": "/spec", "value": original}]))
