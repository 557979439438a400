"""Bad input to site.yml as a whole: each gives rc != 0, one line that names the cause and the fix, and
not one write on the API server (audit log). The role-level cases (http2 ports, duplicate claims, chart
not found, STRICT with unmeshed pods, …) are tested next to their roles; docs/bad-input.md lists all."""

import json

import pytest

from conftest import JSON_CALLBACK, assert_one_line_failure

TEG_NS = "envoy-gateway-system"


def _site(play, extra_vars=None, env=None):
    return play("site.yml", extra_vars=extra_vars, env=dict(JSON_CALLBACK, **(env or {})))


def _assert_refused(run, cause, fix):
    line = assert_one_line_failure(run, cause, fix)
    assert run.writes == [], run.describe_writes()
    return line


@pytest.fixture(scope="module", autouse=True)
def fixture_state(cluster):
    cluster.localcp("reset")


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
], ids=["invalid-variable", "namespace-missing", "gatewayclass-missing", "service-port-missing", "invalid-hostname",
        "app-namespace-missing", "istio-version-latest", "istio-chart-version-missing", "ambient-istio-too-old",
        "mtls-namespace-missing",
        "paused-deployment"])
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
    _assert_refused(_site(play, env=env), cause, fix)


def test_an_unreachable_api_server_is_one_line(play, cluster):
    run = _site(play, env={"K8S_AUTH_KUBECONFIG": "", "K8S_AUTH_HOST": "https://127.0.0.1:1",
                           "K8S_AUTH_API_KEY": "x", "K8S_AUTH_VERIFY_SSL": "false"})
    _assert_refused(run, ["cannot reach the Kubernetes API server"], ["check K8S_AUTH_HOST"])


def _server_and_ca(cluster):
    config = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    return config["clusters"][0]["cluster"]["server"], config["clusters"][0]["cluster"]["certificate-authority"]


def test_a_bad_token_is_one_line_naming_the_credentials(play, cluster):
    server, ca = _server_and_ca(cluster)
    run = _site(play, env={"K8S_AUTH_KUBECONFIG": "", "K8S_AUTH_HOST": server, "K8S_AUTH_API_KEY": "not-a-token",
                           "K8S_AUTH_SSL_CA_CERT": ca, "K8S_AUTH_VERIFY_SSL": "true"})
    _assert_refused(run, ["401 Unauthorized"], ["check the token"])


def test_rbac_forbidden_is_one_line_naming_verb_and_resource(play, cluster):
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", "default")
    token = cluster.kubectl("create", "token", "nobody", "-n", "default").stdout.strip()
    server, ca = _server_and_ca(cluster)
    run = _site(play, env={"K8S_AUTH_KUBECONFIG": "", "K8S_AUTH_HOST": server, "K8S_AUTH_API_KEY": token,
                           "K8S_AUTH_SSL_CA_CERT": ca, "K8S_AUTH_VERIFY_SSL": "true"})
    _assert_refused(run, ["forbidden (403)", "system:serviceaccount:default:nobody"],
                    ["grant that verb on that resource"])
    cluster.kubectl("delete", "serviceaccount", "nobody", "-n", "default")
