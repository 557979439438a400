"""What breaks TEG behind sidecars after "it works once" (issue #16), on the local control plane:

- drift after a TEG upgrade: an upgrade or GitOps sync that replaces Service envoy-gateway with the chart's
  ports drops `appProtocol: tls`; verify.yml names it in one line, and site.yml restores it with exactly one
  write and restarts nothing (istiod pushes the Service's protocol to the sidecars; README, "Running it in
  production").
- headless or ExternalName backends: an app whose Service has no cluster IP is refused by site.yml's plan in
  one line naming the Service and the fix, before any write (envoyproxy/gateway#7849).

The tests of this module depend on each other's order (pytest runs them top to bottom)."""

import json

import pytest

from conftest import JSON_CALLBACK, MATRIX, REPO, SITE_VARS, assert_one_line_failure, load_yaml

TEG_NS = "envoy-gateway-system"


def _fixture_object(kind, name):
    fixture = load_yaml(REPO / "tests" / "fixtures" / "teg" / f"{MATRIX}.yaml")
    return next(o for o in fixture["items"] if o["kind"] == kind and o["metadata"]["name"] == name)


def test_site_applies(play, cluster):
    cluster.localcp("reset")
    run = play("site.yml")
    assert run.rc == 0, run.output[-4000:]
    assert play("verify.yml").rc == 0


def test_a_teg_upgrade_that_replaces_the_xds_service_is_named_by_verify_and_restored_with_one_write(play, cluster):
    # What `helm upgrade --force` (and a replace-style GitOps sync) sends: the chart's Service, whole, in a PUT.
    service = _fixture_object("Service", "envoy-gateway")
    assert "appProtocol" not in json.dumps(service)
    cluster.kubectl("replace", "-f", "-", stdin=json.dumps(service))
    ports = json.loads(cluster.kubectl("get", "service", "envoy-gateway", "-n", TEG_NS, "-o", "json").stdout)["spec"]["ports"]
    assert [p for p in ports if p["port"] == 18000][0].get("appProtocol") is None

    line = assert_one_line_failure(
        play("verify.yml", env=JSON_CALLBACK),
        cause=["1 problem(s): Service envoy-gateway-system/envoy-gateway port 18000 (grpc) has appProtocol None, "
               "expected 'tls'"],
        fix=["rerun site.yml or the teg_istio_prep role"])
    assert "envoy-ratelimit" not in line, line

    run = play("site.yml")
    assert run.rc == 0, run.output[-4000:]
    # Exactly the one write that restores the port: no restart (the sidecars' config for that Service comes
    # from istiod, which pushes it when the Service changes), nothing else rewritten; besides it only the run
    # lock's Lease, which a run with something to write takes.
    assert [f"{e['verb']} {e['requestURI']}" for e in run.configuration_writes] == [
        "patch /api/v1/namespaces/envoy-gateway-system/services/envoy-gateway?fieldManager=teg.istio"], \
        run.describe_writes()
    ports = json.loads(cluster.kubectl("get", "service", "envoy-gateway", "-n", TEG_NS, "-o", "json").stdout)["spec"]["ports"]
    assert [p for p in ports if p["port"] == 18000][0]["appProtocol"] == "tls"
    assert play("verify.yml").rc == 0
    again = play("site.yml")
    assert again.rc == 0 and again.writes == [], again.describe_writes()


BACKENDS_NS = "field-backends"


@pytest.fixture(scope="module")
def backends_without_cluster_ip(cluster):
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BACKENDS_NS}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless", "namespace": BACKENDS_NS},
         "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 8000}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external", "namespace": BACKENDS_NS},
         "spec": {"type": "ExternalName", "externalName": "web.example.net", "ports": [{"name": "http", "port": 8000}]}},
    ]
    cluster.kubectl("apply", "-f", "-", stdin="\n".join(json.dumps(o) for o in objects))
    return BACKENDS_NS


CASES = {
    "headless with service routing": (
        "headless", "service",
        "app web: Service field-backends/headless is headless (clusterIP: None) and has no cluster IP for "
        "expose_app_routing: service",
        "point the app at a ClusterIP Service that selects the same pods, or use expose_app_routing: virtualservice"),
    "ExternalName": (
        "external", "virtualservice",
        "app web: Service field-backends/external is of type ExternalName (web.example.net), which Envoy Gateway "
        "does not route to",
        "point the app at a Service with a selector"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_backend_without_a_cluster_ip_is_refused_before_any_write(case, backends_without_cluster_ip, play):
    service, routing, cause, fix = CASES[case]
    if routing == "service" and MATRIX == "legacy":
        pytest.skip("Envoy Gateway v0.5 has no routingType: service routing is refused before the backends")
    apps = load_yaml(SITE_VARS)["expose_app_apps"] + [
        {"name": "web", "namespace": BACKENDS_NS, "service": service, "port": 8000, "hostnames": ["web.example.com"],
         "path_prefix": "/web"}]
    run = play("site.yml", extra_vars={"expose_app_apps": apps, "expose_app_routing": routing}, env=JSON_CALLBACK)
    assert_one_line_failure(run, cause=[cause], fix=[fix])
    assert run.writes == [], run.describe_writes()


def test_verify_names_a_job_held_by_its_sidecar_and_the_helm_value(play, cluster):
    """A certgen Job pod as the real istiod injects it in TEG's labelled namespace (istio-proxy an ordinary
    container; tests/integration_real/test_certgen_job.py shows the injection): verify names it and the
    chart value, and passes once the Job is gone."""
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "teg-certgen", "namespace": TEG_NS},
           "spec": {"backoffLimit": 1, "template": {"metadata": {"labels": {"app": "certgen"}}, "spec": {
               "restartPolicy": "Never",
               # kwok completes every Job pod it runs, which a pod whose istio-proxy never exits does not do:
               # left unscheduled, the pod stays unfinished, as the hung hook's pod does.
               "nodeSelector": {"teg.istio/no-such-node": "true"},
               "containers": [{"name": "envoy-gateway-certgen", "image": "docker.io/envoyproxy/gateway:v1.9.0"},
                              {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.29.6"}]}}}}
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(job))
    try:
        cluster.kubectl("wait", "--for=create", "pod", "-l", "job-name=teg-certgen", "-n", TEG_NS, "--timeout=60s")
        assert_one_line_failure(
            play("verify.yml", env=JSON_CALLBACK),
            cause=["1 problem(s): Pod envoy-gateway-system/teg-certgen-",
                   " of Job teg-certgen has an istio-proxy sidecar that never exits, so the Job never completes (a TEG "
                   "install or upgrade waits on its certgen hook)"],
            fix=["set TEG's Helm value certgen.job.pod.labels to {sidecar.istio.io/inject: 'false'}, then delete the "
                 "Job"])
    finally:
        cluster.kubectl("delete", "job", "teg-certgen", "-n", TEG_NS, "--cascade=foreground", "--wait=true")
    assert play("verify.yml").rc == 0
