"""strict_mtls against the local control plane (flavour from $MATRIX): the safety preflight that
refuses while pods have no sidecar, force, the PeerAuthentication API version the flavour serves,
idempotence and check mode witnessed by the audit log, namespace policies, pruning and removal.

The local cluster has no injector, so the TEG fixture's pods never have an istio-proxy container;
a pod that does (a plain container of that name, which is what the check reads) stands in for an
injected one. Istio's CRDs are applied from the flavour's pinned copy (what istio_install's `base`
chart installs), so that this role is tested on its own."""

import json
import sys
import time

import pytest
import yaml

from conftest import REPO, RolePlaybook

sys.path.insert(0, str(REPO / "tests" / "localcp"))
import localcp  # noqa: E402  (the flavour -> CRD folder table lives there)

PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "strict_mtls.yml")
TEG_NS = "envoy-gateway-system"
API = {"current": "security.istio.io/v1", "legacy": "security.istio.io/v1beta1"}
MANAGED = "app.kubernetes.io/managed-by=teg.istio"


def _istio_crds(cluster):
    path = cluster.crds / localcp.MATRIX[cluster.matrix]["istio"] / "crd-all.gen.yaml"
    cluster.kubectl("apply", "--server-side", "-f", str(path))
    # `kubectl wait` fails outright while a just-created CRD has no status.conditions yet: poll instead.
    deadline = time.monotonic() + 60
    while cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                          "crd/peerauthentications.security.istio.io", check=False).returncode != 0:
        assert time.monotonic() < deadline, "CRD peerauthentications.security.istio.io not Established"
        time.sleep(1)


@pytest.fixture(scope="module")
def installed(cluster):
    """Once per module (a reset is slow): the TEG fixture, Istio's CRDs, the root namespace and two
    namespaces for namespace policies."""
    cluster.localcp("reset")
    _istio_crds(cluster)
    for namespace in ("istio-system", "apps", "other"):
        cluster.kubectl("create", "namespace", namespace)
    return cluster


@pytest.fixture
def mesh(installed):
    """Each test starts with no PeerAuthentication and no test pod, and leaves none behind."""
    yield installed
    installed.kubectl("delete", "peerauthentications.security.istio.io", "--all", "-A", "--wait=true")
    installed.kubectl("delete", "pods", "--all", "-n", "apps", "--wait=true")


@pytest.fixture
def run(play):
    return RolePlaybook(play, PLAYBOOK).run


@pytest.fixture
def fail(play):
    return RolePlaybook(play, PLAYBOOK).fail


def _policies(cluster):
    """namespace/name -> (apiVersion, spec) of every PeerAuthentication."""
    proc = cluster.kubectl("get", "peerauthentications.security.istio.io", "-A", "-o", "json")
    return {"%s/%s" % (i["metadata"]["namespace"], i["metadata"]["name"]): (i["metadata"].get("labels"), i["spec"])
            for i in json.loads(proc.stdout)["items"]}


def _teg_pods(cluster, namespace=TEG_NS):
    items = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    return sorted("%s/%s" % (namespace, p["metadata"]["name"]) for p in items)


def _pod(name, namespace, containers):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": c, "image": "registry.invalid/never-pulled:1"} for c in containers]}}


def _uris(result):
    return [e["requestURI"] for e in result.writes]


def test_refuses_with_the_unmeshed_pods_then_force_then_nothing_to_do(mesh, run, fail):
    refused, msg = fail(cause=["STRICT mTLS would cut off 4 pod(s) without an istio-proxy sidecar"],
                        fix=["restart them into the mesh", "strict_mtls_force: true"])
    pods = _teg_pods(mesh)
    assert len(pods) == 4
    assert msg.startswith("STRICT mTLS would cut off 4 pod(s) without an istio-proxy sidecar: ")
    assert all(pod in msg for pod in pods), (pods, msg)
    assert msg.endswith("or set strict_mtls_force: true")
    assert refused.writes == [], refused.describe_writes()
    assert _policies(mesh) == {}

    forced = run({"strict_mtls_force": True})
    assert forced.rc == 0, forced.output[-3000:]
    assert "[WARNING]: strict_mtls_force is set; STRICT mTLS cuts off 4 pod(s)" in forced.output
    assert forced.recap()["changed"] == 1
    assert _policies(mesh) == {"istio-system/default": ({"app.kubernetes.io/managed-by": "teg.istio"},
                                                        {"mtls": {"mode": "STRICT"}})}
    # Created through the version the flavour serves (v1 from Istio 1.22, else v1beta1).
    assert _uris(forced) == ["/apis/%s/namespaces/istio-system/peerauthentications" % API[mesh.matrix]]

    again = run({"strict_mtls_force": True})
    assert again.rc == 0, again.output[-3000:]
    assert again.recap()["changed"] == 0
    assert again.writes == [], again.describe_writes()
    # In place as read, so not even dry-run (merge_patch.pending_definitions).
    assert again.dry_runs == [], [e["requestURI"] for e in again.dry_runs]


def test_check_mode_reports_and_writes_nothing(mesh, run):
    result = run({"strict_mtls_force": True}, check=True, diff=True)
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 1
    assert result.writes == [], result.describe_writes()
    assert result.dry_runs, "check mode should compare by server-side dry run"
    assert _policies(mesh) == {}


def test_no_check_unless_strict_and_meshed_pods_pass(mesh, run, fail):
    # PERMISSIVE cuts no pod off, so a pod without a sidecar is not even looked for.
    mesh.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(_pod("plain", "apps", ["app"])))
    permissive = run({"strict_mtls_mode": "PERMISSIVE"})
    mesh.kubectl("delete", "pod", "plain", "-n", "apps", "--wait=true")
    assert permissive.rc == 0, permissive.output[-3000:]
    assert "apps/plain" not in permissive.output
    assert _policies(mesh)["istio-system/default"][1] == {"mtls": {"mode": "PERMISSIVE"}}

    # A STRICT namespace policy checks its namespace only; a pod with an istio-proxy container passes.
    mesh.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(_pod("meshed", "apps", ["app", "istio-proxy"])))
    policies = {"strict_mtls_mode": "PERMISSIVE", "strict_mtls_namespace_policies": [{"namespace": "apps"}]}
    meshed = run(policies)
    assert meshed.rc == 0, meshed.output[-3000:]
    assert _policies(mesh)["apps/default"][1] == {"mtls": {"mode": "STRICT"}}

    mesh.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(_pod("plain", "apps", ["app"])))
    refused, msg = fail(dict(policies, strict_mtls_namespace_policies=[{"namespace": "apps", "name": "other"}]),
                        cause=["would cut off 1 pod(s)", "apps/plain"], fix=["strict_mtls_force: true"])
    assert msg.startswith("STRICT mTLS would cut off 1 pod(s) without an istio-proxy sidecar: apps/plain;")
    assert refused.writes == []


def test_namespace_policies_update_and_prune(mesh, run):
    declared = {"strict_mtls_force": True, "strict_mtls_namespace_policies": [
        {"namespace": "apps", "mode": "PERMISSIVE"},
        {"namespace": "apps", "name": "metrics", "mode": "STRICT", "selector": {"app": "httpbin"},
         "port_level_mtls": {"9090": "DISABLE"}},
    ]}
    first = run(declared)
    assert first.rc == 0, first.output[-3000:]
    found = _policies(mesh)
    assert sorted(found) == ["apps/default", "apps/metrics", "istio-system/default"]
    assert found["apps/default"][1] == {"mtls": {"mode": "PERMISSIVE"}}
    assert found["apps/metrics"][1] == {"mtls": {"mode": "STRICT"}, "selector": {"matchLabels": {"app": "httpbin"}},
                                        "portLevelMtls": {"9090": {"mode": "DISABLE"}}}
    rerun = run(declared)
    assert rerun.writes == [] and rerun.dry_runs == [], rerun.describe_writes()

    # Port modes dropped from the declaration are removed; the namespace-wide policy is pruned.
    mesh.kubectl("apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": API[mesh.matrix], "kind": "PeerAuthentication",
        "metadata": {"name": "theirs", "namespace": "other"}, "spec": {"mtls": {"mode": "DISABLE"}}}))
    second = run({"strict_mtls_force": True, "strict_mtls_namespace_policies": [
        {"namespace": "apps", "name": "metrics", "mode": "PERMISSIVE", "selector": {"app": "httpbin"}}]})
    assert second.rc == 0, second.output[-3000:]
    found = _policies(mesh)
    assert sorted(found) == ["apps/metrics", "istio-system/default", "other/theirs"]
    assert found["apps/metrics"][1] == {"mtls": {"mode": "PERMISSIVE"}, "selector": {"matchLabels": {"app": "httpbin"}}}
    assert sorted((e["verb"], e["objectRef"]["namespace"], e["objectRef"]["name"]) for e in second.writes) == [
        ("delete", "apps", "default"), ("patch", "apps", "metrics")]

    # state absent removes exactly what the collection made.
    removed = run({"strict_mtls_state": "absent"})
    assert removed.rc == 0, removed.output[-3000:]
    assert sorted(_policies(mesh)) == ["other/theirs"]
    assert run({"strict_mtls_state": "absent"}).writes == []


@pytest.mark.parametrize("extra,expected,fix", [
    ({"strict_mtls_namespace_policies": [{"namespace": "apps", "port_level_mtls": {"8080": "DISABLE"}}]},
     "strict_mtls_namespace_policies entry apps/default sets port_level_mtls without a selector", "add a selector"),
    ({"strict_mtls_namespace_policies": [{"namespace": "no-such-ns"}]},
     "namespace(s) no-such-ns not found", "create them, or correct"),
    ({"strict_mtls_root_namespace": "istio-root"}, "namespace(s) istio-root not found", "create them, or correct"),
    ({"strict_mtls_namespace_policies": [{"namespace": "istio-system", "name": "second"}]},
     "strict_mtls_namespace_policies entry istio-system/second has no selector in the root namespace",
     "set strict_mtls_mode instead, or give it a selector"),
])
def test_bad_input_is_one_line_before_any_write(mesh, fail, extra, expected, fix):
    result, msg = fail(dict(extra, strict_mtls_force=True), cause=[expected], fix=[fix])
    assert msg.startswith(expected), msg
    assert result.writes == [], result.describe_writes()
    assert _policies(mesh) == {}


def test_refuses_when_istio_is_not_installed(mesh, fail):
    mesh.kubectl("delete", "crd", "peerauthentications.security.istio.io", "--wait=true")
    try:
        result, msg = fail({"strict_mtls_force": True}, cause=["PeerAuthentication (security.istio.io) is not served"],
                           fix=["install Istio first"])
    finally:
        _istio_crds(mesh)
    assert msg.startswith("PeerAuthentication (security.istio.io) is not served by this cluster: install Istio first")
    assert result.writes == []


def test_ambient_refuses_the_pods_not_enrolled_and_goes_strict_once_they_are(mesh, run, fail):
    """In ambient the check is enrolment: TEG's pods count through their namespace's label (what teg_istio_prep
    sets in ambient, set here directly), a pod in an unlabelled namespace does not until its namespace is."""
    if mesh.matrix != "current":
        pytest.skip("ambient runs on the current flavour only")
    ambient = {"strict_mtls_mesh_mode": "ambient", "strict_mtls_mesh_namespaces": [TEG_NS, "apps"]}
    mesh.kubectl("label", "namespace", TEG_NS, "istio.io/dataplane-mode=ambient")
    mesh.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(_pod("plain", "apps", ["app"])))
    try:
        refused, msg = fail(ambient, cause=["would cut off 1 pod(s) not enrolled in the ambient mesh: apps/plain"],
                            fix=["istio.io/dataplane-mode=ambient", "strict_mtls_force: true"])
        assert TEG_NS not in msg.split(";")[0], msg
        assert refused.writes == [], refused.describe_writes()
        assert _policies(mesh) == {}

        mesh.kubectl("label", "namespace", "apps", "istio.io/dataplane-mode=ambient")
        enrolled = run(ambient)
        assert enrolled.rc == 0, enrolled.output[-3000:]
        assert _policies(mesh)["istio-system/default"][1] == {"mtls": {"mode": "STRICT"}}
        again = run(ambient)
        assert again.rc == 0 and again.writes == [], again.describe_writes()
    finally:
        mesh.kubectl("label", "namespace", TEG_NS, "istio.io/dataplane-mode-")
        mesh.kubectl("label", "namespace", "apps", "istio.io/dataplane-mode-", check=False)
