"""strict_mtls against the local control plane (flavour from $MATRIX): the safety preflight that
refuses while pods have no sidecar, force, the PeerAuthentication API version the flavour serves,
idempotence and check mode witnessed by the audit log, namespace policies, pruning and removal.

The local control plane's stand-in injector (tests/localcp/injector.py) acts only once an istiod is installed, and
this file installs Istio's CRDs only, so the TEG fixture's pods never have an istio-proxy container; a pod that does
(a plain container of that name, which is what the check reads) stands in for an injected one. Istio's CRDs are
applied from the flavour's pinned copy (what istio_install's `base` chart installs), so that this role is tested on
its own."""

import json
import sys
import time

import pytest
import yaml

from conftest import JSON_CALLBACK, REPO, RolePlaybook, task_results

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
    mesh.localcp("delete-crds", "peerauthentications.security.istio.io")
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


# The owners' policies (made by someone else, without the collection's label): never taken over (#26).
PLAN_TASK = "Read the policies, the namespaces and the pods STRICT reaches, and find the policies that differ"
PRIOR = "teg.istio/prior"


def _apply_theirs(cluster, name, namespace, mode, **meta):
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": API[cluster.matrix], "kind": "PeerAuthentication",
        "metadata": dict({"name": name, "namespace": namespace}, **meta), "spec": {"mtls": {"mode": mode}}}))
    return _object(cluster, name, namespace)


def _object(cluster, name, namespace):
    return json.loads(cluster.kubectl("get", "peerauthentications.security.istio.io", name, "-n", namespace,
                                      "-o", "json").stdout)


def _as_owned(obj):
    """What the owners see of their policy: spec, labels and annotations (kubectl apply's own included)."""
    meta = obj["metadata"]
    return {"spec": obj.get("spec"), "labels": meta.get("labels"), "annotations": meta.get("annotations")}


OWNERS = {"labels": {"team": "platform"}, "annotations": {"owner": "platform-team"}}


def test_the_owners_mesh_wide_strict_is_left_alone_by_the_role_and_its_teardown(mesh, run, play):
    theirs = _apply_theirs(mesh, "default", "istio-system", "STRICT", **OWNERS)
    present = play(PLAYBOOK, extra_vars={"strict_mtls_force": True}, use_site_vars=False, env=JSON_CALLBACK)
    assert present.rc == 0, present.output[-3000:]
    assert present.writes == [], present.describe_writes()
    (said,) = task_results(present, "Say which of the owners' policies are already as declared and left as they are")
    assert said["msg"] == ("PeerAuthentication istio-system/default, the owners' mesh-wide policy, is already STRICT: "
                           "left as it is")
    removed = run({"strict_mtls_state": "absent"})
    assert removed.rc == 0, removed.output[-3000:]
    assert removed.writes == [], removed.describe_writes()
    after = _object(mesh, "default", "istio-system")
    assert _as_owned(after) == _as_owned(theirs)
    assert after["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]


def test_the_owners_mesh_wide_permissive_is_switched_recorded_and_given_back_exactly(mesh, run, play):
    theirs = _apply_theirs(mesh, "default", "istio-system", "PERMISSIVE", **OWNERS)
    path = "/apis/%s/namespaces/istio-system/peerauthentications/default" % API[mesh.matrix]

    check = play(PLAYBOOK, extra_vars={"strict_mtls_force": True}, use_site_vars=False, check=True, diff=True,
                 env=JSON_CALLBACK)
    assert check.rc == 0, check.output[-3000:]
    assert check.writes == [], check.describe_writes()
    assert check.recap()["changed"] == 1
    # The --diff shows the mode and the record, written in the same patch.
    (shown,) = task_results(check, "Show how the policies differ from the declarations")
    (diff,) = shown["msg"]
    record = yaml.safe_dump({PRIOR: json.dumps({"/spec/mtls/mode": ["PERMISSIVE", "STRICT"]},
                                               separators=(",", ":"))}, width=1000).strip()
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert {"+    " + record, "+    mode: STRICT"} <= set(added) and not [a for a in added if "labels" in a], diff

    switched = run({"strict_mtls_force": True})
    assert switched.rc == 0, switched.output[-3000:]
    assert [(e["verb"], e["requestURI"].split("?")[0]) for e in switched.writes] == [("patch", path)]
    after = _object(mesh, "default", "istio-system")
    assert after["spec"] == {"mtls": {"mode": "STRICT"}}
    # Not taken over: no label of the collection's, so teardown gives it back instead of deleting it.
    assert after["metadata"]["labels"] == OWNERS["labels"]
    assert json.loads(after["metadata"]["annotations"][PRIOR]) == {"/spec/mtls/mode": ["PERMISSIVE", "STRICT"]}
    again = run({"strict_mtls_force": True})
    assert again.rc == 0 and again.writes == [], again.describe_writes()

    removed = run({"strict_mtls_state": "absent"})
    assert removed.rc == 0, removed.output[-3000:]
    assert [(e["verb"], e["requestURI"].split("?")[0]) for e in removed.writes] == [("patch", path)]
    assert _as_owned(_object(mesh, "default", "istio-system")) == _as_owned(theirs)
    twice = run({"strict_mtls_state": "absent"})
    assert twice.rc == 0 and twice.writes == [], twice.describe_writes()


def _verify_findings(play, tmp_path, **params):
    """teg.istio.mesh_verify's findings (returned rather than failed on): the mTLS part is what is looked at."""
    playbook = tmp_path / "verify-mtls.yml"
    playbook.write_text(json.dumps([{
        "name": "Verify", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Check the mTLS state",
                   "teg.istio.mesh_verify": dict(params, fail_on_findings=False)}]}]))
    result = play(str(playbook), use_site_vars=False, env=JSON_CALLBACK)
    assert result.rc == 0, result.output[-3000:]
    (found,) = task_results(result, "Check the mTLS state")
    return found["findings"]


def test_a_permissive_namespace_policy_under_mesh_wide_strict_is_warned_by_the_plan_and_fails_verify(
        mesh, play, tmp_path):
    _apply_theirs(mesh, "lenient", "apps", "PERMISSIVE")
    _apply_theirs(mesh, "ignored", "other", "DISABLE")  # not a mesh namespace
    line = ("mesh-wide STRICT does not reach all traffic of the mesh namespaces: PeerAuthentication apps/lenient "
            "(namespace-wide PERMISSIVE) keep(s) it PERMISSIVE or DISABLE; set them STRICT or UNSET, or delete them, "
            "or declare the intended ones in strict_mtls_namespace_policies")
    settings = {"strict_mtls_force": True, "strict_mtls_mesh_namespaces": [TEG_NS, "apps"]}
    strict = play(PLAYBOOK, extra_vars=settings, use_site_vars=False, env=JSON_CALLBACK)
    assert strict.rc == 0, strict.output[-3000:]
    (planned,) = task_results(strict, PLAN_TASK)
    assert line in planned["warnings"], planned.get("warnings")
    assert _object(mesh, "lenient", "apps")["spec"] == {"mtls": {"mode": "PERMISSIVE"}}

    findings = _verify_findings(play, tmp_path, mesh_namespaces=[TEG_NS, "apps"])
    assert line in findings, findings
    # Declared as an intended exception (strict_mtls_namespace_policies, verify_mtls_exceptions): not a finding.
    assert line not in _verify_findings(play, tmp_path, mesh_namespaces=[TEG_NS, "apps"],
                                        mtls_exceptions=[{"namespace": "apps", "name": "lenient"}])
