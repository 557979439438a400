"""What breaks TEG behind sidecars after "it works once" (issue #16), on the local control plane:

- drift after a TEG upgrade: an upgrade or GitOps sync that replaces Service envoy-gateway with the chart's
  ports drops `appProtocol: tls`; verify.yml names it in one line, and site.yml restores it with exactly one
  write and restarts nothing (istiod pushes the Service's protocol to the sidecars; README, "Running it in
  production").

The tests of this module depend on each other's order (pytest runs them top to bottom)."""

import json

from conftest import MATRIX, REPO, load_yaml

TEG_NS = "envoy-gateway-system"


def _fixture_object(kind, name):
    fixture = load_yaml(REPO / "tests" / "fixtures" / "teg" / f"{MATRIX}.yaml")
    return next(o for o in fixture["items"] if o["kind"] == kind and o["metadata"]["name"] == name)


def _problems_line(run):
    lines = [line for line in run.output.splitlines() if "problem(s)" in line]
    assert lines, run.output[-3000:]
    return lines[0]


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

    verify = play("verify.yml")
    assert verify.rc != 0, verify.output[-3000:]
    line = _problems_line(verify)
    assert "1 problem(s): Service envoy-gateway-system/envoy-gateway port 18000 (grpc) has appProtocol None, " \
           "expected 'tls'" in line, line
    assert "envoy-ratelimit" not in line, line

    run = play("site.yml")
    assert run.rc == 0, run.output[-4000:]
    # Exactly the one write that restores the port: no restart (the sidecars' config for that Service comes
    # from istiod, which pushes it when the Service changes), nothing else rewritten.
    assert run.describe_writes() == [
        "patch /api/v1/namespaces/envoy-gateway-system/services/envoy-gateway?fieldManager=teg.istio"], \
        run.describe_writes()
    ports = json.loads(cluster.kubectl("get", "service", "envoy-gateway", "-n", TEG_NS, "-o", "json").stdout)["spec"]["ports"]
    assert [p for p in ports if p["port"] == 18000][0]["appProtocol"] == "tls"
    assert play("verify.yml").rc == 0
    again = play("site.yml")
    assert again.rc == 0 and again.writes == [], again.describe_writes()
