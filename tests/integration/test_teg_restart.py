"""teg_restart and teg.istio.rollout_restart against the local control plane (flavour from $MATRIX).

kwok runs the pods, so a restart is observable: each restarted Deployment gets a new ReplicaSet
(new pod-template hash, next revision) and becomes Available again. The audit log witnesses that a
second run writes nothing and that check mode and refusals write nothing.

Istio is installed by the istio_install role from the test stand-ins of its charts (tests/charts),
as in site.yml: the preflight needs istiod, and the trigger records its revision and version."""

import json

import pytest
import yaml

from conftest import MATRIX, REPO, RolePlaybook

PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "teg_restart.yml")
NS = "envoy-gateway-system"
CONTROL_PLANE = ["envoy-gateway", "envoy-ratelimit", "teg-envoy-gateway", "teg-redis"]
TRIGGER = "teg.istio/restart-trigger"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _deployment(name, namespace, labels=None, pod_spec=None, image="registry.invalid/never-pulled:1"):
    labels = labels or {"app": name}
    spec = {"containers": [{"name": "main", "image": image}]}
    spec.update(pod_spec or {})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def _apply(cluster, *objects):
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))


@pytest.fixture(scope="module")
def teg(cluster):
    """Once per module (a reset is slow): the cluster as the TEG fixture left it, without Istio."""
    cluster.localcp("reset")
    return cluster


@pytest.fixture(scope="module")
def mesh(teg, play):
    """Istio installed by the istio_install role, from the test stand-ins of its charts (tests/charts:
    Istio's real CRDs, and a Deployment istiod whose injector touches no pod). Tests that break
    something put it back themselves."""
    result = play(str(REPO / "tests" / "integration" / "playbooks" / "istio_install.yml"), use_site_vars=False,
                  extra_vars={"istio_install_chart_path": teg.env["TEG_ISTIO_TEST_CHARTS"],
                              "istio_install_version": teg.env["TEG_ISTIO_TEST_ISTIO_VERSION"]})
    assert result.rc == 0, result.output[-3000:]
    return teg


@pytest.fixture
def run(play):
    return RolePlaybook(play, PLAYBOOK).run


@pytest.fixture
def fail(play):
    return RolePlaybook(play, PLAYBOOK).fail


def _get(cluster, kind, name, namespace=NS):
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    return json.loads(proc.stdout)


def _state(cluster, name, namespace=NS):
    """What identifies a Deployment's current rollout: revision, pod-template hash of its newest
    ReplicaSet, trigger, and whether it is Available with that ReplicaSet holding every replica."""
    dep = _get(cluster, "deployment", name, namespace)
    revision = dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    selector = ",".join("%s=%s" % kv for kv in dep["spec"]["selector"]["matchLabels"].items())
    sets = json.loads(cluster.kubectl("get", "replicasets", "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]
    [newest] = [rs for rs in sets if rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == revision]
    conditions = {c["type"]: c["status"] for c in dep["status"].get("conditions", [])}
    annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
    return {
        "revision": int(revision),
        "hash": newest["metadata"]["labels"]["pod-template-hash"],
        "trigger": annotations.get(TRIGGER),
        "restarted_at": annotations.get(RESTARTED_AT),
        "available": conditions.get("Available") == "True"
        and newest["status"].get("availableReplicas") == dep["spec"]["replicas"]
        and dep["status"].get("updatedReplicas") == dep["spec"]["replicas"],
    }


def _restore_fixture(cluster):
    """Re-create what a test deleted from the TEG fixture (server-side apply leaves the rest alone)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "tests" / "fixtures" / "teg" / ("%s.yaml" % cluster.matrix)))
    cluster.kubectl("wait", "--for=condition=Available", "--timeout=120s", "-n", NS, "deployment", "--all")


def _states(cluster, names=None, namespace=NS):
    if names is None:
        names = CONTROL_PLANE
    return {name: _state(cluster, name, namespace) for name in names}


def _assert_restarted(before, after):
    for name, old in before.items():
        new = after[name]
        assert new["revision"] == old["revision"] + 1, (name, old, new)
        assert new["hash"] != old["hash"], name
        assert new["available"], name
        assert new["trigger"] and new["restarted_at"], name


def _patched(run_result):
    """Names of the Deployments the run patched for real, from the audit log."""
    return sorted(e["objectRef"]["name"] for e in run_result.writes
                  if e["verb"] == "patch" and e["objectRef"]["resource"] == "deployments")


def test_refuses_without_istiod_and_writes_nothing(teg, fail):
    result, msg = fail(cause=["istiod not found in the cluster"], fix=["run teg.istio.istio_install before teg_restart"])
    assert msg.startswith("istiod not found in the cluster: run teg.istio.istio_install before teg_restart")
    assert result.writes == [], result.describe_writes()


AMBIENT = {"teg_restart_mesh_mode": "ambient"}


@pytest.mark.skipif(MATRIX != "current", reason="ambient mode runs on the current flavour only")
def test_ambient_still_refuses_without_istiod(teg, fail):
    result, _msg = fail(AMBIENT, cause=["istiod not found in the cluster"],
                        fix=["run teg.istio.istio_install before teg_restart"])
    assert result.writes == [], result.describe_writes()


@pytest.mark.skipif(MATRIX != "current", reason="ambient mode runs on the current flavour only")
def test_a_fresh_ambient_mesh_restarts_nothing(mesh, run):
    """No trigger recorded and no sidecar in any pod: ztunnel enrols the pods as they run."""
    before = _states(mesh)
    result = run(AMBIENT)
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 0
    assert result.writes == [], result.describe_writes()
    assert _states(mesh) == before


def test_restart_then_nothing_then_changed_settings_then_force(mesh, run):
    before = _states(mesh)
    assert all(s["trigger"] is None and s["available"] for s in before.values())

    first = run()
    assert first.rc == 0, first.output[-3000:]
    assert first.recap()["changed"] == 1
    after = _states(mesh)
    _assert_restarted(before, after)
    assert len({s["trigger"] for s in after.values()}) == 1
    assert _patched(first) == sorted(CONTROL_PLANE)

    second = run()
    assert second.rc == 0, second.output[-3000:]
    assert second.recap()["changed"] == 0
    assert second.writes == [], second.describe_writes()
    assert _states(mesh) == after

    # What teg_istio_prep changes (the namespace label; in the current flavour also the annotation on
    # the EnvoyProxy the GatewayClass references) changes the trigger: everything restarts once more.
    mesh.kubectl("label", "namespace", NS, "istio-injection=enabled")
    if mesh.matrix == "current":
        mesh.kubectl("patch", "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", "-n", NS, "--type=merge", "-p",
                     json.dumps({"spec": {"provider": {"kubernetes": {"envoyDeployment": {"pod": {"annotations": {
                         "traffic.sidecar.istio.io/includeInboundPorts": ""}}}}}}}))
    third = run()
    assert third.rc == 0, third.output[-3000:]
    relabelled = _states(mesh)
    _assert_restarted(after, relabelled)
    assert {s["trigger"] for s in relabelled.values()} != {s["trigger"] for s in after.values()}

    forced = run({"teg_restart_force": True})
    assert forced.rc == 0, forced.output[-3000:]
    assert forced.recap()["changed"] == 1
    _assert_restarted(relabelled, _states(mesh))
    assert _patched(forced) == sorted(CONTROL_PLANE)
    # Each restart patch names this collection as its field manager, as the other modules' patches do.
    assert {e["requestURI"].split("fieldManager=")[-1].split("&")[0] for e in forced.writes
            if e["objectRef"]["resource"] == "deployments"} == {"teg.istio"}, [e["requestURI"] for e in forced.writes]


def test_the_envoyproxy_annotation_alone_changes_the_trigger(mesh, run):
    """Read from the EnvoyProxy the GatewayClass references, in the group the flavour serves."""
    annotations = {"traffic.sidecar.istio.io/includeInboundPorts": "8080"}
    pod = {"spec": {"provider": {"type": "Kubernetes",
                                 "kubernetes": {"envoyDeployment": {"pod": {"annotations": annotations}}}}}}
    if mesh.matrix == "current":  # TEG's chart already points GatewayClass teg at its own EnvoyProxy
        mesh.kubectl("patch", "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", "-n", NS, "--type=merge",
                     "-p", json.dumps(pod))
    else:  # what teg_istio_prep's create mode does on Envoy Gateway v0.5
        _apply(mesh, dict({"apiVersion": "config.gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
                           "metadata": {"name": "data-plane-sidecars", "namespace": NS}}, **pod))
        mesh.kubectl("patch", "gatewayclasses.gateway.networking.k8s.io", "teg", "--type=merge", "-p", json.dumps(
            {"spec": {"parametersRef": {"group": "config.gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                        "name": "data-plane-sidecars", "namespace": NS}}}))
    settled = _states(mesh)
    result = run()
    assert result.rc == 0, result.output[-3000:]
    _assert_restarted(settled, _states(mesh))
    assert run().writes == []


def test_missing_deployment_is_reported_and_skipped(mesh, run):
    mesh.kubectl("delete", "deployment", "envoy-ratelimit", "-n", NS, "--wait=true")
    present = [n for n in CONTROL_PLANE if n != "envoy-ratelimit"]
    before = _states(mesh, present)
    try:
        result = run({"teg_restart_force": True})
    finally:
        _restore_fixture(mesh)
    assert result.rc == 0, result.output[-3000:]
    assert "Deployment envoy-gateway-system/envoy-ratelimit not found: skipped" in result.output
    _assert_restarted(before, _states(mesh, present))


def test_data_plane_deployments_are_found_by_label(mesh, run):
    proxy_labels = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
                    "app.kubernetes.io/managed-by": "envoy-gateway",
                    "gateway.envoyproxy.io/owning-gateway-name": "apps"}
    _apply(mesh, _deployment("envoy-apps-0123abcd", NS, labels=proxy_labels))
    mesh.kubectl("wait", "--for=condition=Available", "--timeout=120s", "-n", NS, "deployment/envoy-apps-0123abcd")
    try:
        off = run({"teg_restart_data_plane": False, "teg_restart_force": True})
        before = _state(mesh, "envoy-apps-0123abcd")
        on = run()
    finally:
        mesh.kubectl("delete", "deployment", "envoy-apps-0123abcd", "-n", NS)
    assert off.rc == 0, off.output[-3000:]
    assert _patched(off) == sorted(CONTROL_PLANE)
    assert on.rc == 0, on.output[-3000:]
    # envoy-ratelimit is managed by envoy-gateway too, but it is no proxy: only the Envoy Deployment.
    assert _patched(on) == ["envoy-apps-0123abcd"]
    assert before["trigger"] is None


def _envoyproxy_pod_annotations(cluster):
    """The pod annotations of the EnvoyProxy GatewayClass teg references (what Envoy Gateway puts on Envoy's pods)."""
    ref = json.loads(cluster.kubectl("get", "gatewayclass", "teg", "-o", "json").stdout)["spec"].get("parametersRef")
    if not ref:
        return {}
    ep = json.loads(cluster.kubectl("get", "envoyproxies." + ref["group"], ref["name"], "-n", ref.get("namespace", "default"),
                                    "-o", "json").stdout)
    return ((((ep["spec"].get("provider") or {}).get("kubernetes") or {}).get("envoyDeployment") or {}).get("pod")
            or {}).get("annotations") or {}


def test_an_envoy_deployment_made_after_the_restart_with_injected_pods_is_left_alone(mesh, run):
    """Envoy Gateway creates the Envoy Deployment of a Gateway that expose_app adds after teg_restart ran: it
    records no trigger, but its pods come out of the injector already as a restart would make them. A rerun
    leaves it alone and writes nothing; once its pods differ (here: a sidecar of an older istiod) it is
    restarted. The pod template carries what Istio's injector adds (the local control plane's stand-in injector
    leaves a pod that has an istio-proxy container as it is); tests/integration_real proves it with the real Envoy
    Gateway and istiod."""
    mesh.kubectl("label", "namespace", NS, "istio-injection=enabled", "--overwrite")
    assert run().rc == 0  # every other Deployment carries the current trigger
    version = mesh.env["TEG_ISTIO_TEST_ISTIO_VERSION"]
    wanted = {k: v for k, v in _envoyproxy_pod_annotations(mesh).items()
              if k in ("traffic.sidecar.istio.io/includeInboundPorts", "sidecar.istio.io/nativeSidecar",
                       "proxy.istio.io/config")}
    labels = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
              "app.kubernetes.io/managed-by": "envoy-gateway", "gateway.envoyproxy.io/owning-gateway-name": "apps"}
    injected = _deployment("envoy-apps-4567cdef", NS, labels=labels, pod_spec={"containers": [
        {"name": "envoy", "image": "docker.io/envoyproxy/envoy:distroless-v1.36.0"},
        {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:%s" % version}]})
    injected["spec"]["template"]["metadata"]["annotations"] = dict(wanted, **{
        "sidecar.istio.io/status": json.dumps({"initContainers": ["istio-init"], "containers": ["istio-proxy"],
                                               "revision": "default"})})
    _apply(mesh, injected)
    mesh.kubectl("wait", "--for=condition=Available", "--timeout=120s", "-n", NS, "deployment/envoy-apps-4567cdef")
    try:
        before = _state(mesh, "envoy-apps-4567cdef")
        left = run()
        assert left.rc == 0, left.output[-3000:]
        assert left.writes == [], left.describe_writes()
        assert left.recap()["changed"] == 0
        assert _state(mesh, "envoy-apps-4567cdef") == before

        mesh.kubectl("set", "image", "-n", NS, "deployment/envoy-apps-4567cdef",
                     "istio-proxy=docker.io/istio/proxyv2:0.0.1")
        mesh.kubectl("rollout", "status", "-n", NS, "deployment/envoy-apps-4567cdef", "--timeout=120s")
        stale = run()
        assert stale.rc == 0, stale.output[-3000:]
        assert _patched(stale) == ["envoy-apps-4567cdef"]
    finally:
        mesh.kubectl("delete", "deployment", "envoy-apps-4567cdef", "-n", NS)


def test_a_rollout_that_never_completes_fails_after_the_timeout_naming_it(mesh, fail):
    stuck = _deployment("stuck", NS, pod_spec={"nodeSelector": {"teg.istio/no-such-node": "true"}})
    _apply(mesh, stuck)
    names = CONTROL_PLANE + ["stuck"]
    before = _states(mesh, CONTROL_PLANE)
    try:
        result, msg = fail({"teg_restart_deployments": names, "teg_restart_wait_timeout": 15,
                            "teg_restart_force": True},
                           cause=["Deployment envoy-gateway-system/stuck ("],
                           fix=["describe deployment stuck", "raise the wait timeout"])
        assert msg.startswith("rollout not complete after 15s, not Available: Deployment envoy-gateway-system/stuck (")
        for name in CONTROL_PLANE:
            assert "Deployment envoy-gateway-system/%s " % name not in msg
        # Patched together, waited together: the others rolled out meanwhile.
        _assert_restarted(before, _states(mesh, CONTROL_PLANE))
        assert sorted(_patched(result)) == sorted(names)
        assert _get(mesh, "deployment", "stuck")["spec"]["template"]["metadata"]["annotations"][TRIGGER]

        # Nothing to restart any more, but the stuck rollout is still not Available: still a failure.
        again, msg = fail({"teg_restart_deployments": names, "teg_restart_wait_timeout": 5},
                          cause=["Deployment envoy-gateway-system/stuck ("], fix=["describe deployment stuck"])
        assert again.writes == [], again.describe_writes()
        assert msg.startswith("rollout not complete after 5s, not Available: Deployment envoy-gateway-system/stuck (")
    finally:
        mesh.kubectl("delete", "deployment", "stuck", "-n", NS)


def test_a_paused_deployment_is_refused_before_any_write(mesh, fail):
    mesh.kubectl("rollout", "pause", "deployment/teg-redis", "-n", NS)
    try:
        result, msg = fail({"teg_restart_force": True}, cause=["paused Deployment(s) teg-redis"],
                           fix=["rollout resume deployment/teg-redis"])
    finally:
        mesh.kubectl("rollout", "resume", "deployment/teg-redis", "-n", NS)
    assert msg.startswith("cannot restart paused Deployment(s) teg-redis in namespace envoy-gateway-system")
    assert result.writes == [], result.describe_writes()


def test_check_mode_reports_and_writes_nothing(mesh, run):
    before = _states(mesh)
    result = run({"teg_restart_force": True}, check=True, diff=True)
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 1
    assert result.writes == [], result.describe_writes()
    assert len(result.dry_runs) == len(CONTROL_PLANE)
    # The diff shows each pod template's restart stamp replaced (force keeps the same trigger).
    assert result.output.count("-                    %s: " % RESTARTED_AT) == len(CONTROL_PLANE)
    assert result.output.count("+                    %s: " % RESTARTED_AT) == len(CONTROL_PLANE)
    assert _states(mesh) == before


def test_missing_namespace_is_one_line_and_writes_nothing(mesh, fail):
    result, msg = fail({"teg_restart_namespace": "no-such-namespace"}, cause=["namespace no-such-namespace not found"],
                       fix=["install TEG first", "set teg_restart_namespace"])
    assert msg.startswith("namespace no-such-namespace not found: install TEG first")
    assert result.writes == []


def _proxy_labels(gateway):
    return {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
            "app.kubernetes.io/managed-by": "envoy-gateway", "gateway.envoyproxy.io/owning-gateway-name": gateway}


@pytest.mark.skipif(MATRIX != "current", reason="ambient mode runs on the current flavour only")
def test_sidecar_to_ambient_restarts_once_what_has_a_sidecar_and_back_restarts_into_sidecars(mesh, run):
    """From sidecar mode, ambient restarts the TEG Deployments (they record a sidecar-mode trigger) and an Envoy
    Deployment without trigger whose pods run a sidecar (its template carries one, as an older istiod injected it),
    once; it leaves an Envoy Deployment without trigger and without sidecar alone. Back in sidecar
    mode, everything restarts into sidecars, the TEG Deployments with the trigger they had before."""
    mesh.kubectl("label", "namespace", NS, "istio-injection=enabled", "--overwrite")
    assert run().rc == 0
    sidecar_trigger = _state(mesh, "envoy-gateway")["trigger"]
    with_sidecar = _deployment("envoy-apps-sidecar", NS, labels=_proxy_labels("sidecar"), pod_spec={"containers": [
        {"name": "envoy", "image": "docker.io/envoyproxy/envoy:distroless-v1.36.0"},
        {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:%s" % mesh.env["TEG_ISTIO_TEST_ISTIO_VERSION"]}]})
    plain = _deployment("envoy-apps-plain", NS, labels=_proxy_labels("plain"))
    # Opted out, or the local control plane's stand-in injector would give its pods a sidecar (the namespace is
    # labelled for injection).
    plain["spec"]["template"]["metadata"]["annotations"] = {"sidecar.istio.io/inject": "false"}
    _apply(mesh, with_sidecar, plain)
    extra = ["envoy-apps-sidecar", "envoy-apps-plain"]
    for name in extra:
        mesh.kubectl("wait", "--for=condition=Available", "--timeout=120s", "-n", NS, "deployment/" + name)
    restarted = CONTROL_PLANE + ["envoy-apps-sidecar"]
    try:
        before = _states(mesh, CONTROL_PLANE + extra)
        check = run(AMBIENT, check=True)
        assert check.rc == 0, check.output[-3000:]
        assert check.recap()["changed"] == 1
        assert check.writes == [], check.describe_writes()
        assert len(check.dry_runs) == len(restarted)
        assert _states(mesh, CONTROL_PLANE + extra) == before

        ambient = run(AMBIENT)
        assert ambient.rc == 0, ambient.output[-3000:]
        assert _patched(ambient) == sorted(restarted)
        after = _states(mesh, CONTROL_PLANE + extra)
        _assert_restarted({name: before[name] for name in restarted}, after)
        assert after["envoy-apps-plain"] == before["envoy-apps-plain"]
        ambient_triggers = {after[name]["trigger"] for name in restarted}
        assert len(ambient_triggers) == 1 and sidecar_trigger not in ambient_triggers

        again = run(AMBIENT)
        assert again.rc == 0, again.output[-3000:]
        assert again.recap()["changed"] == 0
        assert again.writes == [], again.describe_writes()

        back = run()
        assert back.rc == 0, back.output[-3000:]
        # envoy-apps-plain too: in sidecar mode its pods lack the sidecar the namespace label asks for.
        assert _patched(back) == sorted(CONTROL_PLANE + extra)
        assert {_state(mesh, name)["trigger"] for name in CONTROL_PLANE} == {sidecar_trigger}
    finally:
        for name in extra:
            mesh.kubectl("delete", "deployment", name, "-n", NS)
