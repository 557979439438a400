"""The ground every other test stands on: a real API server at the pinned version, a scheduler and
kwok that make Deployments Available, the real upstream CRD schemas enforced, the TEG fixture, and
an audit log that records our writes."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import LOCALCP, MATRIX, REPO

sys.path.insert(0, str(REPO / "tests" / "localcp"))
import localcp  # noqa: E402  (the lane's pins)

ENVOYPROXY_API = {"current": "gateway.envoyproxy.io/v1alpha1", "legacy": "config.gateway.envoyproxy.io/v1alpha1"}
GATEWAY_API = {"current": "gateway.networking.k8s.io/v1", "legacy": "gateway.networking.k8s.io/v1beta1"}


def pinned(key):
    """The lane's pin (versions.env; the legacy lane's Kubernetes and helm are its LEGACY_ ones)."""
    return localcp.lane_versions(MATRIX)[key]


def test_server_reports_the_pinned_version(cluster):
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned("KUBERNETES_VERSION")
    assert version["clientVersion"]["gitVersion"] == pinned("KUBERNETES_VERSION")
    # The lane's helm (Helm 4 in the current lane, Helm 3 in the legacy one), the one on the tests' PATH.
    helm = subprocess.run(["helm", "version", "--short"], env=cluster.env, capture_output=True, text=True, check=True)
    assert helm.stdout.split("+")[0].strip() == pinned("HELM_VERSION")


def test_a_deployment_becomes_available_through_scheduler_and_kwok(cluster):
    cluster.kubectl("create", "namespace", "smoke")
    cluster.kubectl("create", "deployment", "smoke", "-n", "smoke", "--image=registry.invalid/never-pulled:1")
    cluster.kubectl("wait", "--for=condition=Available", "deployment/smoke", "-n", "smoke", "--timeout=120s")
    pod = json.loads(cluster.kubectl("get", "pods", "-n", "smoke", "-o", "json").stdout)["items"][0]
    assert pod["spec"]["nodeName"] == "kwok-node-0"
    assert pod["status"]["phase"] == "Running"
    cluster.kubectl("delete", "namespace", "smoke", "--wait=false")


def _envoyproxy(deployment_spec):
    return yaml.safe_dump({
        "apiVersion": ENVOYPROXY_API[MATRIX], "kind": "EnvoyProxy",
        "metadata": {"name": "schema-probe", "namespace": "envoy-gateway-system"},
        "spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": deployment_spec}}},
    })


def test_the_real_envoyproxy_schema_is_enforced(cluster):
    misspelled = cluster.kubectl("create", "--validate=strict", "--dry-run=server", "-f", "-", check=False,
                                 stdin=_envoyproxy({"pod": {"anotations": {"a": "b"}}}))
    assert misspelled.returncode != 0
    assert 'unknown field "spec.provider.kubernetes.envoyDeployment.pod.anotations"' in misspelled.stderr
    wrong_type = cluster.kubectl("create", "--dry-run=server", "-f", "-", check=False,
                                 stdin=_envoyproxy({"replicas": "two"}))
    assert wrong_type.returncode != 0
    assert "spec.provider.kubernetes.envoyDeployment.replicas" in wrong_type.stderr
    correct = cluster.kubectl("create", "--validate=strict", "--dry-run=server", "-f", "-", check=False,
                              stdin=_envoyproxy({"pod": {"annotations": {"traffic.sidecar.istio.io/includeInboundPorts": ""}}}))
    assert correct.returncode == 0, correct.stderr


def test_the_teg_fixture_matches_its_generation(cluster):
    gc = json.loads(cluster.kubectl("get", f"gatewayclasses.{GATEWAY_API[MATRIX].split('/')[1]}."
                                    "gateway.networking.k8s.io", "teg", "-o", "json").stdout)
    assert gc["apiVersion"] == GATEWAY_API[MATRIX]
    assert gc["spec"]["controllerName"] == "gateway.envoyproxy.io/gatewayclass-controller"
    if MATRIX == "current":
        assert gc["spec"]["parametersRef"]["name"] == "teg-envoy-proxy"
    else:
        assert "parametersRef" not in gc["spec"]
    svc = json.loads(cluster.kubectl("get", "service", "envoy-gateway", "-n", "envoy-gateway-system",
                                     "-o", "json").stdout)
    grpc = [p for p in svc["spec"]["ports"] if p["port"] == 18000]
    assert grpc == [{"name": "grpc", "port": 18000, "protocol": "TCP", "targetPort": 18000}]
    deployments = cluster.kubectl("get", "deployments", "-n", "envoy-gateway-system", "-o",
                                  "jsonpath={.items[*].metadata.name}").stdout.split()
    assert sorted(deployments) == ["envoy-gateway", "envoy-ratelimit", "teg-envoy-gateway", "teg-redis"]


def test_the_audit_log_records_writes_and_tells_dry_runs_apart(cluster):
    position = cluster.audit_position()
    cluster.kubectl("create", "configmap", "audit-probe", "-n", "default", "--dry-run=server")
    cluster.kubectl("create", "configmap", "audit-probe", "-n", "default")
    cluster.kubectl("get", "configmap", "audit-probe", "-n", "default")
    events = cluster.mutations_since(position)
    uris = [e["requestURI"] for e in events]
    assert len(events) == 2, uris
    assert sum("dryRun=All" in u for u in uris) == 1
    cluster.kubectl("delete", "configmap", "audit-probe", "-n", "default")


def test_cluster_up_is_idempotent(cluster):
    before = json.loads((cluster.state_dir / "state.json").read_text())["pids"]
    again = subprocess.run([sys.executable, str(LOCALCP), "up", "--matrix", MATRIX], env=cluster.env,
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr
    assert json.loads((cluster.state_dir / "state.json").read_text())["pids"] == before


def test_cluster_up_refuses_the_other_flavour_while_running(cluster):
    other = "legacy" if MATRIX == "current" else "current"
    proc = subprocess.run([sys.executable, str(LOCALCP), "up", "--matrix", other], env=cluster.env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "make cluster-down" in proc.stderr


@pytest.mark.parametrize("command", ["env", "stop-apiserver"])
def test_commands_without_a_cluster_say_how_to_start_one(tmp_path, command):
    proc = subprocess.run([sys.executable, str(LOCALCP), command], capture_output=True, text=True, check=False,
                          env={"LOCALCP_DIR": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "no local cluster is running" in proc.stderr


def test_reset_returns_to_the_fixture(cluster, reset):
    cluster.kubectl("create", "namespace", "leftover")
    cluster.kubectl("label", "namespace", "envoy-gateway-system", "istio-injection=enabled")
    cluster.kubectl("patch", "service", "envoy-gateway", "-n", "envoy-gateway-system", "--type=strategic",
                    "-p", '{"spec":{"ports":[{"port":18000,"appProtocol":"tls"}]}}')
    reset()
    namespaces = cluster.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert "leftover" not in namespaces
    labels = json.loads(cluster.kubectl("get", "namespace", "envoy-gateway-system", "-o", "json").stdout)
    assert "istio-injection" not in labels["metadata"].get("labels", {})
    svc = json.loads(cluster.kubectl("get", "service", "envoy-gateway", "-n", "envoy-gateway-system",
                                     "-o", "json").stdout)
    assert all("appProtocol" not in p for p in svc["spec"]["ports"])


def test_the_crds_come_from_the_folder_the_launcher_resolved(cluster):
    """The launcher is the one source of the upstream CRDs (tests/lint/lint.sh refuses any other in tests). Without
    TEG_ISTIO_CRDS_DIR (as `make test` runs) that is the folder fetch_crds made from crds.lock, most files out of
    Go modules: the cluster must have got every file of the lock, each verified by SHA-256."""
    sys.path.insert(0, str(REPO / "tests" / "localcp"))
    import fetch_crds
    import localcp

    assert cluster.crds == localcp.crds_dir()
    if not os.environ.get("TEG_ISTIO_CRDS_DIR"):
        assert cluster.crds == localcp.crds_download_dir()
    for folder, name, sha256, _source in fetch_crds.entries():
        assert hashlib.sha256((cluster.crds / folder / name).read_bytes()).hexdigest() == sha256, (folder, name)
    served = cluster.kubectl("get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert "envoyproxies." + ENVOYPROXY_API[MATRIX].split("/")[0] in served
