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
], ids=["invalid-variable", "namespace-missing", "gatewayclass-missing", "service-port-missing", "invalid-hostname"])
def test_bad_variables_stop_before_any_write(play, extra_vars, cause, fix):
    _assert_refused(_site(play, extra_vars), cause, fix)


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
