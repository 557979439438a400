"""A GatewayClass parametersRef without a namespace is read the one way Envoy Gateway v1.7+ reads it, as
the namespace "default", everywhere in the collection: teg_istio_prep annotates that EnvoyProxy,
expose_app sets its routingType, mesh_verify checks it, and both teardowns take back what they set on
it (docs/architecture.md, "GatewayClass parametersRef"). Current flavour only: Envoy Gateway v0.5 (the
legacy flavour) requires the namespace, and its own namespace, which teg_istio_prep refuses to work around."""

import json

import pytest
import yaml

from conftest import JSON_CALLBACK, MATRIX, REPO, task_results

GROUP = "gateway.envoyproxy.io"
NAME = "unqualified"
ANNOTATION = "traffic.sidecar.istio.io/includeInboundPorts"
PLAYBOOKS = REPO / "tests" / "integration" / "playbooks"

pytestmark = pytest.mark.skipif(MATRIX != "current", reason="Envoy Gateway v0.5 requires parametersRef.namespace")


@pytest.fixture(scope="module")
def unqualified(cluster):
    """GatewayClass teg referencing EnvoyProxy `unqualified` without a namespace; the EnvoyProxy in default."""
    cluster.localcp("reset")
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": GROUP + "/v1alpha1", "kind": "EnvoyProxy", "metadata": {"name": NAME, "namespace": "default"},
        "spec": {"provider": {"type": "Kubernetes"}, "logging": {"level": {"default": "warn"}}}}))
    cluster.kubectl("patch", "gatewayclass", "teg", "--type=merge", "-p", json.dumps(
        {"spec": {"parametersRef": {"group": GROUP, "kind": "EnvoyProxy", "name": NAME, "namespace": None}}}))
    ref = json.loads(cluster.kubectl("get", "gatewayclass", "teg", "-o", "json").stdout)["spec"]["parametersRef"]
    assert "namespace" not in ref
    yield cluster
    cluster.localcp("reset")


def envoyproxy(cluster):
    return json.loads(cluster.kubectl("get", "envoyproxies." + GROUP, NAME, "-n", "default", "-o", "json").stdout)


def role(play, name, **extra_vars):
    result = play(str(PLAYBOOKS / f"{name}.yml"), extra_vars=extra_vars, use_site_vars=False)
    assert result.rc == 0, result.output[-3000:]
    return result


SAMPLE = {"expose_app_sample": True, "expose_app_routing": "service",
          "expose_app_apps": [{"name": "httpbin", "namespace": "httpbin", "service": "httpbin", "port": 8000,
                               "hostnames": ["www.example.com"], "path_prefix": "/httpbin"}]}


def test_prep_expose_verify_and_both_teardowns_use_the_envoyproxy_in_default(unqualified, play, tmp_path):
    cluster = unqualified
    role(play, "teg_istio_prep")
    pod = envoyproxy(cluster)["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]
    # With the native-sidecar annotation teg_istio_prep_sidecar_drain auto adds on this flavour.
    assert pod["annotations"] == {ANNOTATION: "", "sidecar.istio.io/nativeSidecar": "true"}

    role(play, "expose_app", **SAMPLE)
    assert envoyproxy(cluster)["spec"]["routingType"] == "Service"

    verify = tmp_path / "verify.yml"
    verify.write_text(yaml.safe_dump([{
        "name": "Verify", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Check the configuration",
                   "teg.istio.mesh_verify": {"apps": SAMPLE["expose_app_apps"], "routing": "service", "mtls_mode": "",
                                             "fail_on_findings": False}}]}]))
    result = play(str(verify), use_site_vars=False, env=JSON_CALLBACK)
    assert result.rc == 0, result.output[-3000:]
    (found,) = task_results(result, "Check the configuration")
    assert isinstance(found["findings"], list), found
    assert not [f for f in found["findings"] if "EnvoyProxy" in f], found["findings"]

    role(play, "expose_app", expose_app_state="absent", **{k: v for k, v in SAMPLE.items() if k != "expose_app_routing"})
    assert "routingType" not in envoyproxy(cluster)["spec"]

    role(play, "teg_istio_prep", teg_istio_prep_state="absent")
    assert "kubernetes" not in envoyproxy(cluster)["spec"]["provider"]
    assert envoyproxy(cluster)["spec"]["logging"] == {"level": {"default": "warn"}}  # the rest stays
