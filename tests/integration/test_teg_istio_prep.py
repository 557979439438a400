"""Role teg_istio_prep against the local control plane: step 1 of the procedure on the flavour's real
CRDs. Current flavour: GatewayClass teg already references TEG's EnvoyProxy, so mode auto merges the
annotation into it. Legacy flavour (Envoy Gateway v0.5 APIs): no reference, so mode auto creates the
EnvoyProxy and points the GatewayClass at it. The API server's audit log is the witness for "a second
run writes nothing" and "check mode writes nothing"."""

import json
import re
import time

import pytest
import yaml

from conftest import JSON_CALLBACK, MATRIX, REPO, assert_one_line_failure

PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "teg_istio_prep.yml"
FIXTURE = REPO / "tests" / "fixtures" / "teg" / f"{MATRIX}.yaml"
NS = "envoy-gateway-system"
ANNOTATION = "traffic.sidecar.istio.io/includeInboundPorts"
EP_GROUP = {"current": "gateway.envoyproxy.io", "legacy": "config.gateway.envoyproxy.io"}[MATRIX]
EP_API = EP_GROUP + "/v1alpha1"
EP_CRD_FILE = {"current": "envoy-gateway-v1.9.0/gateway.envoyproxy.io_envoyproxies.yaml",
               "legacy": "envoy-gateway-v0.5.0/config.gateway.envoyproxy.io_envoyproxies.yaml"}[MATRIX]
GC_API = {"current": "gateway.networking.k8s.io/v1", "legacy": "gateway.networking.k8s.io/v1beta1"}[MATRIX]
# What mode auto resolves to on each flavour, and the EnvoyProxy that then carries the annotation.
AUTO_MODE = {"current": "merge", "legacy": "create"}[MATRIX]
TARGET_EP = {"current": "teg-envoy-proxy", "legacy": "data-plane-sidecars"}[MATRIX]
NATIVE = "sidecar.istio.io/nativeSidecar"
PROXY_CONFIG = "proxy.istio.io/config"
# What teg_istio_prep_sidecar_drain auto adds on each flavour (module_utils/_teg_istio_prep/drain.py): Envoy
# Gateway v1.9 drains its Envoy pods and Kubernetes 1.34 with an Istio >= 1.24 (or none known) runs native
# sidecars; Envoy Gateway v0.5 has no spec.shutdown (no drain), so nothing.
DRAIN = {"current": {NATIVE: "true"}, "legacy": {}}[MATRIX]


def fixture_object(kind, name):
    """An object of the TEG fixture as the test suite applies it (documents, or items of a List)."""
    with open(FIXTURE) as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d]
    objects = [item for d in docs for item in (d["items"] if d["kind"] == "List" else [d])]
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise KeyError((kind, name))


def get(cluster, *args):
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def envoyproxy(cluster, name, check=True):
    """The EnvoyProxy; with check=False None when it does not exist (any other failed read fails the test)."""
    if not check:
        return cluster.get_or_none(f"envoyproxies.{EP_GROUP}", name, "-n", NS)
    return json.loads(cluster.kubectl("get", f"envoyproxies.{EP_GROUP}", name, "-n", NS, "-o", "json").stdout)


def pod_annotations(ep):
    return ep["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"]


def resource_versions(cluster):
    objects = [("namespace", NS), ("service", "envoy-gateway", "-n", NS), ("service", "envoy-ratelimit", "-n", NS),
               ("gatewayclass", "teg"),
               (f"envoyproxies.{EP_GROUP}", TARGET_EP, "-n", NS)]
    return {o[0] + "/" + o[1]: get(cluster, *o)["metadata"]["resourceVersion"] for o in objects}


def run_role(play, extra_vars=None, **kwargs):
    return play(str(PLAYBOOK), extra_vars=extra_vars, use_site_vars=False, **kwargs)


def assert_refused(run, cause, fix):
    """One line naming the cause and the fix (conftest.assert_one_line_failure), and not one write."""
    msg = assert_one_line_failure(run, cause, fix)
    assert run.writes == [], run.describe_writes()
    return msg


@pytest.fixture(scope="module")
def fresh(cluster):
    """The cluster as TEG's install left it, once for this module."""
    cluster.localcp("reset")
    return cluster


def test_check_mode_on_a_fresh_cluster_reports_changes_and_writes_nothing(fresh, play):
    cluster = fresh
    run = run_role(play, check=True, diff=True)
    assert run.rc == 0, run.output[-3000:]
    # Namespace label with the EnvoyProxy annotation (one teg.istio.k8s_objects call), appProtocol on the xDS and the
    # rate-limit ports; create mode also repoints the GatewayClass.
    assert run.recap()["changed"] == (3 if AUTO_MODE == "merge" else 4)
    assert run.writes == [], run.describe_writes()
    assert run.dry_runs, "check mode must ask the API server (dry run), not guess"
    assert "--- before" in run.stdout and "+++ after" in run.stdout
    assert "appProtocol: tls" in run.stdout
    assert "istio-injection: enabled" in run.stdout
    assert "istio-injection" not in get(cluster, "namespace", NS)["metadata"].get("labels", {})
    port = get(cluster, "service", "envoy-gateway", "-n", NS)["spec"]["ports"][0]
    assert "appProtocol" not in port
    assert all("appProtocol" not in p for p in get(cluster, "service", "envoy-ratelimit", "-n", NS)["spec"]["ports"])
    if AUTO_MODE == "create":
        assert envoyproxy(cluster, "data-plane-sidecars", check=False) is None
        assert "parametersRef" not in get(cluster, "gatewayclass", "teg")["spec"]


def test_the_role_prepares_teg_and_a_second_run_writes_nothing(fresh, play):
    cluster = fresh
    run = run_role(play)
    assert run.rc == 0, run.output[-3000:]
    assert run.writes, "the first run must write"

    labels = get(cluster, "namespace", NS)["metadata"]["labels"]
    assert labels["istio-injection"] == "enabled"
    assert "istio.io/rev" not in labels

    # Only appProtocol is added to port 18000; every other field of every port is as TEG left it.
    ports = get(cluster, "service", "envoy-gateway", "-n", NS)["spec"]["ports"]
    expected = [dict(p, appProtocol="tls") if p["port"] == 18000 else p
                for p in fixture_object("Service", "envoy-gateway")["spec"]["ports"]]
    assert ports == expected
    # The same on the rate-limit service's gRPC port, which Envoy Gateway names http.
    ports = get(cluster, "service", "envoy-ratelimit", "-n", NS)["spec"]["ports"]
    assert ports == [dict(p, appProtocol="tls") if p["port"] == 8081 else p
                     for p in fixture_object("Service", "envoy-ratelimit")["spec"]["ports"]]

    ep = envoyproxy(cluster, TARGET_EP)
    assert ep["apiVersion"] == EP_API
    assert pod_annotations(ep)[ANNOTATION] == ""
    gc = get(cluster, "gatewayclass", "teg")
    assert gc["apiVersion"] == GC_API
    assert gc["spec"]["parametersRef"] == {"group": EP_GROUP, "kind": "EnvoyProxy", "name": TARGET_EP,
                                           "namespace": NS}
    if AUTO_MODE == "merge":
        # TEG's own setting survives, and no second EnvoyProxy appears.
        assert ep["spec"]["logging"] == fixture_object("EnvoyProxy", "teg-envoy-proxy")["spec"]["logging"]
        assert envoyproxy(cluster, "data-plane-sidecars", check=False) is None
        assert "teg.istio/prior" not in gc["metadata"].get("annotations", {})
    else:
        assert ep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "teg.istio"
        # The reference replaced (none, as TEG installed it there) is recorded for teardown.
        assert json.loads(gc["metadata"]["annotations"]["teg.istio/prior"]) == {
            "/spec/parametersRef": [None, gc["spec"]["parametersRef"]]}

    versions = resource_versions(cluster)
    again = run_role(play)
    assert again.rc == 0, again.output[-3000:]
    assert again.recap()["changed"] == 0
    assert again.writes == [], again.describe_writes()
    assert resource_versions(cluster) == versions


def test_a_revision_replaces_the_injection_label(fresh, play):
    cluster = fresh
    assert run_role(play).rc == 0  # prepared with the default label, whatever ran before
    run = run_role(play, {"teg_istio_prep_revision": "canary"}, diff=True)
    assert run.rc == 0, run.output[-3000:]
    assert run.recap()["changed"] == 1
    labels = get(cluster, "namespace", NS)["metadata"]["labels"]
    assert labels["istio.io/rev"] == "canary"
    assert "istio-injection" not in labels  # it would take precedence over the revision
    again = run_role(play, {"teg_istio_prep_revision": "canary"})
    assert again.rc == 0 and again.writes == [], again.describe_writes()
    back = run_role(play)
    assert back.rc == 0, back.output[-3000:]
    labels = get(cluster, "namespace", NS)["metadata"]["labels"]
    assert labels["istio-injection"] == "enabled" and "istio.io/rev" not in labels


def test_annotations_already_on_the_envoyproxy_are_kept(fresh, play):
    cluster = fresh
    assert run_role(play).rc == 0  # prepared, so that only the annotations differ below
    kept = {"example.com/keep": "yes", ANNOTATION: "8080"}
    patch = {"spec": {"provider": {"type": "Kubernetes",
                                   "kubernetes": {"envoyDeployment": {"pod": {"annotations": kept}}}}}}
    cluster.kubectl("patch", f"envoyproxies.{EP_GROUP}", TARGET_EP, "-n", NS, "--type=merge",
                    "-p", json.dumps(patch))
    run = run_role(play)
    assert run.rc == 0, run.output[-3000:]
    assert run.recap()["changed"] == 1
    [write] = run.writes
    assert write["verb"] == "patch" and TARGET_EP in write["requestURI"]
    assert pod_annotations(envoyproxy(cluster, TARGET_EP)) == dict(DRAIN, **{"example.com/keep": "yes", ANNOTATION: ""})


def drain_annotations(ep):
    return {k: v for k, v in pod_annotations(ep).items() if k in (NATIVE, PROXY_CONFIG)}


def test_the_envoy_pods_get_the_sidecar_drain_and_a_second_run_writes_nothing(fresh, play):
    """teg_istio_prep_sidecar_drain auto, from the versions the cluster shows: native sidecars on the current
    flavour, nothing on the legacy one (Envoy Gateway v0.5 does not drain); teardown takes it back."""
    cluster = fresh
    run = run_role(play)
    assert run.rc == 0, run.output[-3000:]
    assert drain_annotations(envoyproxy(cluster, TARGET_EP)) == DRAIN
    again = run_role(play)
    assert again.rc == 0, again.output[-3000:]
    assert again.writes == [], again.describe_writes()
    assert run_role(play, {"teg_istio_prep_state": "absent"}).rc == 0
    # Legacy: the EnvoyProxy the role made is gone; current: TEG's is left without what was added.
    left = envoyproxy(cluster, TARGET_EP, check=False)
    if MATRIX == "legacy":
        assert left is None, left
    else:
        assert left is not None and NATIVE not in json.dumps(left), left
    assert run_role(play).rc == 0


@pytest.mark.skipif(MATRIX != "current", reason="Envoy Gateway v0.5 has no spec.shutdown: drain_duration is refused")
def test_drain_duration_follows_the_envoyproxy_s_drain_timeout_and_teardown_gives_the_owners_annotation_back(fresh, play):
    cluster = fresh
    assert run_role(play, {"teg_istio_prep_state": "absent"}).rc == 0  # no native annotation left from auto
    mine = "holdApplicationUntilProxyStarts: true\n"
    patch = {"spec": {"shutdown": {"drainTimeout": "1m30s"}, "provider": {"type": "Kubernetes", "kubernetes": {
        "envoyDeployment": {"pod": {"annotations": {PROXY_CONFIG: mine}}}}}}}
    cluster.kubectl("patch", f"envoyproxies.{EP_GROUP}", TARGET_EP, "-n", NS, "--type=merge", "-p", json.dumps(patch))
    try:
        wanted = {"teg_istio_prep_sidecar_drain": "drain_duration"}
        run = run_role(play, wanted)
        assert run.rc == 0, run.output[-3000:]
        annotations = drain_annotations(envoyproxy(cluster, TARGET_EP))
        assert list(annotations) == [PROXY_CONFIG]
        assert json.loads(annotations[PROXY_CONFIG]) == {"holdApplicationUntilProxyStarts": True,
                                                         "terminationDrainDuration": "90s"}
        again = run_role(play, wanted)
        assert again.rc == 0 and again.writes == [], again.describe_writes()
        # Teardown gives that annotation back exactly as the owners wrote it (the record of prior values).
        assert run_role(play, {"teg_istio_prep_state": "absent"}).rc == 0
        assert drain_annotations(envoyproxy(cluster, TARGET_EP)) == {PROXY_CONFIG: mine}
    finally:
        undo = {"spec": {"shutdown": None, "provider": {"type": "Kubernetes", "kubernetes": None}}}
        cluster.kubectl("patch", f"envoyproxies.{EP_GROUP}", TARGET_EP, "-n", NS, "--type=merge", "-p", json.dumps(undo))
    assert run_role(play).rc == 0


@pytest.mark.skipif(MATRIX != "legacy", reason="the refusals of Envoy Gateway v0.5 with Istio 1.19")
def test_on_envoy_gateway_v0_5_with_istio_1_19_neither_cure_applies(fresh, play):
    run = run_role(play, {"teg_istio_prep_sidecar_drain": "drain_duration"}, env=JSON_CALLBACK)
    assert_refused(run, ["teg_istio_prep_sidecar_drain drain_duration", "no spec.shutdown"], ["set it to auto or none"])
    run = run_role(play, {"teg_istio_prep_sidecar_drain": "native", "teg_istio_prep_istio_version": "1.19.10"},
                   env=JSON_CALLBACK)
    assert_refused(run, ["Istio 1.19 has no per-pod sidecar.istio.io/nativeSidecar"],
                   ["set it to auto or drain_duration"])


def test_create_mode_records_the_replaced_reference_and_the_module_restores_it(fresh, play, tmp_path):
    """Whatever GatewayClass teg referenced as TEG installed it (current: TEG's EnvoyProxy; legacy:
    nothing) is what state=absent puts back, even after two create-mode runs with different names, and from
    the annotations the version before the record of prior values wrote."""
    cluster = fresh
    original = fixture_object("GatewayClass", "teg")["spec"].get("parametersRef")
    assert run_role(play).rc == 0
    run = run_role(play, {"teg_istio_prep_envoyproxy_mode": "create", "teg_istio_prep_envoyproxy_name": "sidecars-b"})
    assert run.rc == 0, run.output[-3000:]
    gc = get(cluster, "gatewayclass", "teg")
    assert gc["spec"]["parametersRef"] == {"group": EP_GROUP, "kind": "EnvoyProxy", "name": "sidecars-b",
                                           "namespace": NS}
    sidecars_b = gc["spec"]["parametersRef"]
    # The first reference replaced stays the prior one, in the record of prior values.
    assert json.loads(gc["metadata"]["annotations"]["teg.istio/prior"])["/spec/parametersRef"] == [original, sidecars_b]
    assert pod_annotations(envoyproxy(cluster, "sidecars-b"))[ANNOTATION] == ""

    playbook = tmp_path / "absent.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Take the reference back", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Remove the reference teg.istio set",
                   "teg.istio.gatewayclass_parameters": {"name": "teg", "state": "absent"}}]}]))
    absent = play(str(playbook), use_site_vars=False, diff=True)
    assert absent.rc == 0, absent.output[-3000:]
    assert absent.recap()["changed"] == 1
    assert "+++ after" in absent.stdout
    gc = get(cluster, "gatewayclass", "teg")
    assert gc["spec"].get("parametersRef") == original
    assert "teg.istio/prior" not in gc["metadata"].get("annotations", {})

    # A GatewayClass pointed by the version before the record carries its two annotations: given back all the same.
    legacy = {"metadata": {"annotations": {
        "teg.istio/parameters-ref": "%s/EnvoyProxy/%s/sidecars-b" % (EP_GROUP, NS),
        "teg.istio/previous-parameters-ref": json.dumps(original, sort_keys=True) if original else None}},
        "spec": {"parametersRef": sidecars_b}}
    cluster.kubectl("patch", "gatewayclass", "teg", "--type=merge", "-p", json.dumps(legacy))
    absent = play(str(playbook), use_site_vars=False)
    assert absent.rc == 0 and absent.recap()["changed"] == 1, absent.output[-3000:]
    gc = get(cluster, "gatewayclass", "teg")
    assert gc["spec"].get("parametersRef") == original
    assert not {"teg.istio/parameters-ref", "teg.istio/previous-parameters-ref", "teg.istio/prior"} & set(
        gc["metadata"].get("annotations", {}))
    again = play(str(playbook), use_site_vars=False)
    assert again.rc == 0 and again.writes == [], again.describe_writes()
    assert again.recap()["changed"] == 0
    cluster.kubectl("delete", f"envoyproxies.{EP_GROUP}", "sidecars-b", "-n", NS)


# The role run alone. The missing namespace, GatewayClass and port, and the drain refusals, are refused through
# site.yml as users run it (test_bad_input.py).
@pytest.mark.parametrize("extra_vars, cause, fix", [
    ({"teg_istio_prep_service": "no-such-svc"}, [f"Service {NS}/no-such-svc not found"],
     ["set teg_istio_prep_service to Envoy Gateway's control-plane Service"]),
    ({"teg_istio_prep_service_port_name": "xds"}, ["has no port named xds"],
     ["set teg_istio_prep_service_port or teg_istio_prep_service_port_name"]),
    ({"teg_istio_prep_ratelimit_service_port": 8099},
     [f"Service {NS}/envoy-ratelimit has no port 8099 (its ports: 8081)"], ["teg_istio_prep_ratelimit_service_port"]),
    ({"teg_istio_prep_pod_annotations": {ANNOTATION: None}}, [ANNOTATION, "must be a string"],
     ['write "" for an empty value']),
], ids=["service-missing", "port-name-missing", "ratelimit-port-missing", "null-annotation"])
def test_bad_input_is_refused_before_any_write(fresh, play, extra_vars, cause, fix):
    # A fresh-cluster state is not needed: each case stops in preflight, which every state passes through.
    assert_refused(run_role(play, extra_vars, env=JSON_CALLBACK), cause, fix)


def test_without_the_ratelimit_service_nothing_is_declared_and_teardown_takes_it_back(fresh, play):
    """Envoy Gateway deletes envoy-ratelimit while global rate limiting is off: the role has nothing to
    declare then, and says nothing about it. Where it exists, teardown takes appProtocol back."""
    cluster = fresh
    cluster.kubectl("delete", "service", "envoy-ratelimit", "-n", NS, "--wait=true")
    try:
        run = run_role(play)
        assert run.rc == 0, run.output[-3000:]
        assert not [e for e in run.writes if e["objectRef"].get("name") == "envoy-ratelimit"], run.describe_writes()
        assert run_role(play, {"teg_istio_prep_state": "absent"}).rc == 0
    finally:
        cluster.kubectl("apply", "--server-side", "-f", "-",
                        stdin=yaml.safe_dump(fixture_object("Service", "envoy-ratelimit")))
    assert run_role(play).rc == 0
    assert get(cluster, "service", "envoy-ratelimit", "-n", NS)["spec"]["ports"][0]["appProtocol"] == "tls"
    assert run_role(play, {"teg_istio_prep_state": "absent"}).rc == 0
    assert "appProtocol" not in get(cluster, "service", "envoy-ratelimit", "-n", NS)["spec"]["ports"][0]
    assert run_role(play).rc == 0


def test_an_invalid_variable_is_refused_by_the_argument_spec(fresh, play):
    """ansible-core's own validation of the role's argument spec: its header line, then one line per problem
    (assert_one_line_failure accepts exactly one)."""
    run = run_role(play, {"teg_istio_prep_envoyproxy_mode": "replace"}, env=JSON_CALLBACK)
    msg = assert_refused(run, cause=["teg_istio_prep_envoyproxy_mode", "got: replace"],
                         fix=["must be one of: auto, create, merge"])
    assert msg == "value of teg_istio_prep_envoyproxy_mode must be one of: auto, create, merge, got: replace"


def test_merge_mode_without_a_usable_reference_is_refused(fresh, play):
    cluster = fresh
    if MATRIX == "legacy":
        # Envoy Gateway v0.5 / TEG v0.1: the GatewayClass has no parametersRef to follow.
        cluster.kubectl("patch", "gatewayclass", "teg", "--type=json", "-p",
                        '[{"op": "remove", "path": "/spec/parametersRef"}]', check=False)
        assert_refused(run_role(play, {"teg_istio_prep_envoyproxy_mode": "merge"}, env=JSON_CALLBACK),
                       ["GatewayClass teg has no parametersRef"], ["set teg_istio_prep_envoyproxy_mode to create"])
    else:
        cluster.kubectl("delete", f"envoyproxies.{EP_GROUP}", "teg-envoy-proxy", "-n", NS)
        try:
            assert_refused(run_role(play, env=JSON_CALLBACK),
                           [f"references EnvoyProxy {NS}/teg-envoy-proxy, which does not exist"],
                           ["create it, or set teg_istio_prep_envoyproxy_mode to create"])
        finally:
            cluster.kubectl("apply", "--server-side", "-f", "-",
                            stdin=yaml.safe_dump(fixture_object("EnvoyProxy", "teg-envoy-proxy")))


def _crd(cluster, path):
    with open(cluster.crds / path) as fh:
        return next(d for d in yaml.safe_load_all(fh) if d and d.get("kind") == "CustomResourceDefinition")


def test_an_envoyproxy_api_without_pod_annotations_is_refused(fresh, play):
    """Envoy Gateway before v0.4 had envoyDeployment without `pod`: the real CRD with that field cut."""
    cluster = fresh
    real = _crd(cluster, EP_CRD_FILE)
    old = json.loads(json.dumps(real))
    for version in old["spec"]["versions"]:
        deployment = (version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["provider"]
                      ["properties"]["kubernetes"]["properties"]["envoyDeployment"])
        del deployment["properties"]["pod"]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(old))
    try:
        assert_refused(run_role(play, env=JSON_CALLBACK), [f"the EnvoyProxy API {EP_API} has no",
                       "Envoy Gateway older than v0.4"], ["upgrade TEG / Envoy Gateway to v0.4 or later"])
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(real))


def test_no_envoyproxy_api_is_refused(fresh, play):
    """Envoy Gateway not installed: no group serves envoyproxies. Runs last: it deletes the CRD, and
    with it every EnvoyProxy, then puts the cluster back as TEG's install left it."""
    cluster = fresh
    real = _crd(cluster, EP_CRD_FILE)
    cluster.localcp("delete-crds", real["metadata"]["name"])
    try:
        msg = assert_refused(run_role(play, env=JSON_CALLBACK), ["no API group serves envoyproxies"],
                             ["install TEG / Envoy Gateway with its CRDs"])
        assert re.search(r"gateway\.envoyproxy\.io nor config\.gateway\.envoyproxy\.io", msg)
    finally:
        cluster.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(real))
        # `kubectl wait` errors out until the new CRD has any status condition at all.
        deadline = time.monotonic() + 60
        while cluster.kubectl("wait", "--for=condition=Established", f"crd/{real['metadata']['name']}",
                              "--timeout=10s", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the EnvoyProxy CRD did not become Established again"
            time.sleep(0.5)
        cluster.localcp("reset")


AMBIENT = {"teg_istio_prep_mesh_mode": "ambient"}
DATAPLANE_MODE = "istio.io/dataplane-mode"
# Ambient mode's one pod annotation: ztunnel leaves the Envoy pods' inbound (the edge's plaintext) alone.
BYPASS = {"ambient.istio.io/bypass-inbound-capture": "true"}


def mesh_labels(cluster):
    labels = get(cluster, "namespace", NS)["metadata"].get("labels") or {}
    return {k: v for k, v in labels.items() if k in ("istio-injection", "istio.io/rev", DATAPLANE_MODE)}


def envoy_pod_annotations(ep):
    return ((((ep["spec"].get("provider") or {}).get("kubernetes") or {}).get("envoyDeployment") or {}).get("pod")
            or {}).get("annotations") or {}


@pytest.mark.skipif(MATRIX != "current", reason="ambient mode runs on the current flavour only (the legacy one refuses)")
def test_ambient_takes_back_sidecar_mode_reruns_without_writes_switches_back_and_teardown_undoes_both(fresh, play):
    cluster = fresh
    assert run_role(play).rc == 0
    assert envoy_pod_annotations(envoyproxy(cluster, TARGET_EP)) == dict(DRAIN, **{ANNOTATION: ""})

    check = run_role(play, AMBIENT, check=True, diff=True)
    assert check.rc == 0, check.output[-3000:]
    # The namespace label and the EnvoyProxy, in one teg.istio.k8s_objects call, dry-run.
    assert check.recap()["changed"] == 1
    assert check.writes == [], check.describe_writes()
    assert check.dry_runs
    assert "istio.io/dataplane-mode: ambient" in check.stdout
    assert mesh_labels(cluster) == {"istio-injection": "enabled"}

    ambient = run_role(play, AMBIENT)
    assert ambient.rc == 0, ambient.output[-3000:]
    assert mesh_labels(cluster) == {DATAPLANE_MODE: "ambient"}
    ep = envoyproxy(cluster, TARGET_EP)
    assert envoy_pod_annotations(ep) == BYPASS
    # TEG's own settings stay; routingType is expose_app's, not this role's.
    assert ep["spec"]["logging"] == fixture_object("EnvoyProxy", "teg-envoy-proxy")["spec"]["logging"]
    assert "routingType" not in ep["spec"]
    versions = resource_versions(cluster)
    again = run_role(play, AMBIENT)
    assert again.rc == 0, again.output[-3000:]
    assert again.recap()["changed"] == 0
    assert again.writes == [], again.describe_writes()
    assert resource_versions(cluster) == versions

    # Mode create: the EnvoyProxy it makes carries no sidecar annotation, only the bypass, and the real CRD schema
    # takes it.
    created = run_role(play, dict(AMBIENT, teg_istio_prep_envoyproxy_mode="create"))
    assert created.rc == 0, created.output[-3000:]
    own = envoyproxy(cluster, "data-plane-sidecars")
    assert own["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "teg.istio"
    assert own["spec"]["provider"] == {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {"pod": {
        "annotations": BYPASS}}}}
    assert get(cluster, "gatewayclass", "teg")["spec"]["parametersRef"]["name"] == "data-plane-sidecars"
    assert run_role(play, dict(AMBIENT, teg_istio_prep_state="absent")).rc == 0
    assert envoyproxy(cluster, "data-plane-sidecars", check=False) is None
    assert get(cluster, "gatewayclass", "teg")["spec"]["parametersRef"]["name"] == TARGET_EP
    assert mesh_labels(cluster) == {}
    # Teardown takes the bypass back off TEG's EnvoyProxy too (merge mode put it there), leaving no empty maps.
    assert "kubernetes" not in envoyproxy(cluster, TARGET_EP)["spec"].get("provider", {})

    # Back to sidecar mode from ambient: the ambient label and the bypass go, the injection label and annotations
    # come back.
    assert run_role(play, AMBIENT).rc == 0
    back = run_role(play)
    assert back.rc == 0, back.output[-3000:]
    assert mesh_labels(cluster) == {"istio-injection": "enabled"}
    assert envoy_pod_annotations(envoyproxy(cluster, TARGET_EP)) == dict(DRAIN, **{ANNOTATION: ""})


@pytest.mark.skipif(MATRIX != "legacy", reason="the refusal of Envoy Gateway v0.5, which has no routingType")
def test_ambient_is_refused_on_envoy_gateway_v0_5(fresh, play):
    run = run_role(play, AMBIENT, env=JSON_CALLBACK)
    assert_refused(run, ["teg_istio_prep_mesh_mode ambient needs the EnvoyProxy's spec.routingType"],
                   ["upgrade TEG / Envoy Gateway", "teg_istio_prep_mesh_mode to sidecar"])
