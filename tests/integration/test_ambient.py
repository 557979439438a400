"""Istio's ambient mode from the same playbook (teg_istio_mesh_mode: ambient), on the local control plane with the
stand-in charts, the API server's audit log as the witness (issue #17):

- site.yml in ambient, cut off by the API server's death after its first write and run again, converges: TEG's
  and httpbin's namespaces labelled istio.io/dataplane-mode=ambient and not for injection, the EnvoyProxy routing to
  Services with none of the sidecar annotations but the bypass of
  ztunnel's inbound capture (ambient.istio.io/bypass-inbound-capture), no mesh
  VirtualService, istio-cni and ztunnel installed after istiod, STRICT in place, and no TEG Deployment
  restarted (ambient enrols running pods);
- a second run writes nothing; verify.yml passes in ambient, and names the EnvoyProxy when the bypass is taken
  off by hand, which a rerun of site.yml puts back;
- switching to sidecar and back with site.yml: each switch restarts every TEG Deployment exactly once, takes
  back what the other mode set, and the run after it writes nothing;
- teardown.yml with Istio removed leaves the cluster as cluster-up left it;
- least privilege (issue #29): every run is made as the ServiceAccount of rbac/binding-example.yml, bound to both
  ClusterRoles of rbac/clusterrole.yml; the rerun and its verify as one bound to teg-istio alone with
  istio_install_manage false (Istio installed by someone else); the last test reads every request of theirs back
  from the audit log: none refused, and what teg-istio alone used lies within teg-istio.

Ambient needs Istio 1.24 or later: only the current flavour runs it (the legacy flavour's refusal is a row of
test_bad_input.py). The tests of this module depend on each other's order."""

import json
from collections import Counter

import pytest

import faults
import rbac_audit
from conftest import JSON_CALLBACK, MATRIX, REPO, PlaybookRun, assert_one_line_failure, playbook_command
from snapshots import differences, differences_apart_from_restarts, restarted, sidecars, snapshot

pytestmark = pytest.mark.skipif(MATRIX != "current", reason="ambient needs Istio >= 1.24: the current flavour only")

TEG_NS = "envoy-gateway-system"
AMBIENT = {"teg_istio_mesh_mode": "ambient"}
SIDECAR = {"teg_istio_mesh_mode": "sidecar"}
DATAPLANE_MODE = "istio.io/dataplane-mode"
INCLUDE_INBOUND = "traffic.sidecar.istio.io/includeInboundPorts"
BYPASS = "ambient.istio.io/bypass-inbound-capture"
TRIGGER = "teg.istio/restart-trigger"
TEG_DEPLOYMENTS = ("envoy-gateway", "envoy-ratelimit", "teg-envoy-gateway", "teg-redis")
FULL_TEARDOWN = {"teardown_istio": True, "istio_install_remove_crds": True}


def get(cluster, kind, name, namespace=None):
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    return json.loads(cluster.kubectl(*args).stdout)


def items(cluster, kind, namespace):
    return json.loads(cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]


def triggers(cluster):
    """{Deployment name: restart trigger of its pod template (None when never restarted)} of TEG's namespace."""
    return {d["metadata"]["name"]: ((d["spec"]["template"]["metadata"].get("annotations") or {}).get(TRIGGER))
            for d in items(cluster, "deployments", TEG_NS)}


def restarts(run):
    """{Deployment: number of writes to it} of a run (rollout_restart patches the pod template once)."""
    return Counter(e["objectRef"]["name"] for e in run.writes if e["objectRef"]["resource"] == "deployments"
                   and e["objectRef"]["namespace"] == TEG_NS)


def envoyproxy(cluster):
    ref = get(cluster, "gatewayclasses.gateway.networking.k8s.io", "teg")["spec"]["parametersRef"]
    return get(cluster, "envoyproxies." + ref["group"], ref["name"], ref.get("namespace") or "default")


def mesh_virtualservices(cluster):
    return [v for v in items(cluster, "virtualservices.networking.istio.io", TEG_NS)
            if "mesh" in (v["spec"].get("gateways") or [])]


def daemonsets(cluster):
    return sorted(d["metadata"]["name"] for d in items(cluster, "daemonsets", "istio-system"))


def assert_ambient(cluster):
    for namespace in (TEG_NS, "httpbin"):
        labels = get(cluster, "namespace", namespace)["metadata"].get("labels") or {}
        assert labels.get(DATAPLANE_MODE) == "ambient", (namespace, labels)
        assert "istio-injection" not in labels and "istio.io/rev" not in labels, (namespace, labels)
    spec = envoyproxy(cluster)["spec"]
    assert spec.get("routingType") == "Service", spec
    pod = ((spec.get("provider") or {}).get("kubernetes") or {}).get("envoyDeployment", {}).get("pod") or {}
    assert INCLUDE_INBOUND not in (pod.get("annotations") or {}), pod
    assert (pod.get("annotations") or {}).get(BYPASS) == "true", pod
    assert mesh_virtualservices(cluster) == []
    assert daemonsets(cluster) == ["istio-cni-node", "ztunnel"]
    policy = get(cluster, "peerauthentications.security.istio.io", "default", "istio-system")
    assert policy["spec"]["mtls"]["mode"] == "STRICT"


def assert_sidecar(cluster):
    for namespace in (TEG_NS, "httpbin"):
        labels = get(cluster, "namespace", namespace)["metadata"].get("labels") or {}
        assert labels.get("istio-injection") == "enabled" and DATAPLANE_MODE not in labels, (namespace, labels)
    spec = envoyproxy(cluster)["spec"]
    assert "routingType" not in spec, spec
    assert spec["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"][INCLUDE_INBOUND] == ""
    assert BYPASS not in spec["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"]
    assert len(mesh_virtualservices(cluster)) == 1
    assert daemonsets(cluster) == []


@pytest.fixture(scope="module")
def identities(cluster):
    """The ServiceAccounts of rbac/ on a reset cluster, and the audit log's position before their first run."""
    cluster.localcp("reset")
    yield {"env": rbac_audit.bind(cluster), "since": cluster.audit_position()}
    rbac_audit.unbind(cluster)


@pytest.fixture(scope="module")
def play(play, identities):
    """Every playbook run of this module as the ServiceAccount bound to both ClusterRoles of rbac/ (least privilege
    in ambient mode); a test gives another identity's env to run as that one."""
    def run(playbook, env=None, **kwargs):
        return play(playbook, env=dict(identities["env"][rbac_audit.FULL], **(env or {})), **kwargs)
    return run


@pytest.fixture(scope="module")
def fresh(cluster, identities):
    return snapshot(cluster)


def test_check_mode_in_ambient_writes_nothing(play, fresh, cluster):
    run = play("site.yml", extra_vars=AMBIENT, check=True, diff=True)
    assert run.rc == 0, run.output[-4000:]
    assert run.recap()["changed"] > 0
    assert run.writes == [], run.describe_writes()
    assert differences(snapshot(cluster), fresh) == []


def test_site_in_ambient_cut_off_after_its_first_write_then_rerun_enrols_without_restarts(play, cluster, identities):
    """site.yml in ambient with the API server killed at the write after its first one (faults.WriteGate, for the
    ServiceAccount that runs it) fails in one line; a rerun converges: TEG and the apps enrolled, no TEG Deployment
    restarted by either run (ambient enrols running pods)."""
    position = cluster.audit_position()
    env = dict(cluster.env, **identities["env"][rbac_audit.FULL], **JSON_CALLBACK)
    rc, stdout, stderr, cut_at, admitted = faults.cut_off(
        cluster, playbook_command("site.yml", AMBIENT), env, REPO,
        lambda request, admitted: any(not a.endswith("/teg-istio-run") for a in admitted),
        user=rbac_audit.user(rbac_audit.FULL))
    assert_one_line_failure(PlaybookRun(rc, stdout, stderr, []), cause=["cannot reach the Kubernetes API server"],
                            fix=["that the API server is running"])
    cut = PlaybookRun(rc, stdout, stderr, cluster.mutations_since(position))
    assert cut.configuration_writes and restarts(cut) == {}, (cut_at, admitted)
    run = play("site.yml", extra_vars=AMBIENT)
    assert run.rc == 0, run.output[-4000:]
    assert_ambient(cluster)
    assert restarts(run) == {}, restarts(run)
    assert all(triggers(cluster)[name] is None for name in TEG_DEPLOYMENTS), triggers(cluster)


def test_a_second_ambient_run_writes_nothing_and_verify_passes(play, identities):
    # As a platform team runs it where Istio is installed separately: teg-istio alone, istio_install_manage false.
    alone = dict(AMBIENT, istio_install_manage=False)
    run = play("site.yml", extra_vars=alone, env=identities["env"][rbac_audit.WITHOUT_INSTALL])
    assert run.rc == 0, run.output[-4000:]
    assert run.recap()["changed"] == 0
    assert run.writes == [], run.describe_writes()
    verify = play("verify.yml", extra_vars=alone, env=identities["env"][rbac_audit.WITHOUT_INSTALL])
    assert verify.rc == 0, verify.output[-4000:]


def test_verify_names_the_envoyproxy_without_the_bypass_and_a_rerun_puts_it_back(play, cluster):
    ref = get(cluster, "gatewayclasses.gateway.networking.k8s.io", "teg")["spec"]["parametersRef"]
    where = "EnvoyProxy %s/%s" % (ref.get("namespace") or "default", ref["name"])
    cluster.kubectl("patch", "envoyproxies." + ref["group"], ref["name"], "-n", ref.get("namespace") or "default",
                    "--type=merge", "-p", json.dumps({"spec": {"provider": {"kubernetes": {"envoyDeployment": {
                        "pod": {"annotations": {BYPASS: None}}}}}}}))
    verify = play("verify.yml", extra_vars=AMBIENT, env=JSON_CALLBACK)
    assert_one_line_failure(verify, ["1 problem(s)", where, BYPASS + "='<unset>', expected 'true'"],
                            ["run the teg_istio_prep role in ambient mode"])
    run = play("site.yml", extra_vars=AMBIENT)
    assert run.rc == 0, run.output[-4000:]
    assert_ambient(cluster)
    # The one write is the EnvoyProxy's bypass: Envoy Gateway rolls its pods, teg_restart restarts nothing.
    assert [e["objectRef"]["resource"] for e in run.configuration_writes] == ["envoyproxies"], run.describe_writes()
    assert play("verify.yml", extra_vars=AMBIENT).rc == 0


def _restart_httpbin(cluster, labels):
    """What the app's owners do on a switch of mode (the collection restarts TEG only): the namespace labelled for
    the new mode, the app restarted into it."""
    cluster.kubectl("label", "namespace", "httpbin", "--overwrite", *labels)
    cluster.kubectl("rollout", "restart", "deployment/httpbin", "-n", "httpbin")
    cluster.kubectl("rollout", "status", "deployment/httpbin", "-n", "httpbin", "--timeout=120s")


def test_switching_to_sidecar_restarts_teg_once_and_takes_back_ambient(play, cluster):
    """STRICT's safety check first refuses, before any write, naming the app's pod that ambient enrolled and that has
    no sidecar; once its owners restart it into the mesh, the switch goes through."""
    refused = play("site.yml", extra_vars=SIDECAR, env=JSON_CALLBACK)
    assert_one_line_failure(refused, cause=["STRICT mTLS would cut off 1 pod(s) without an istio-proxy sidecar: httpbin/"],
                            fix=["restart them into the mesh", "or set strict_mtls_force: true"])
    assert refused.writes == [], refused.describe_writes()
    _restart_httpbin(cluster, ["istio-injection=enabled", DATAPLANE_MODE + "-"])
    assert sidecars(cluster, "httpbin") == {"httpbin/httpbin": {True}}
    run = play("site.yml", extra_vars=SIDECAR)
    assert run.rc == 0, run.output[-4000:]
    assert_sidecar(cluster)
    counts = restarts(run)
    assert all(counts[name] == 1 for name in TEG_DEPLOYMENTS), counts
    # Through the local control plane's stand-in injector (tests/localcp/injector.py), as through istiod's.
    assert sidecars(cluster, TEG_NS) == {f"{TEG_NS}/{name}": {True} for name in TEG_DEPLOYMENTS}
    sidecar_triggers = triggers(cluster)
    assert all(sidecar_triggers[name] for name in TEG_DEPLOYMENTS), sidecar_triggers
    again = play("site.yml", extra_vars=SIDECAR)
    assert again.rc == 0 and again.writes == [], again.describe_writes()


def test_switching_back_to_ambient_restarts_teg_once_to_drop_the_sidecars(play, cluster):
    # The app's owners move it first (site.yml's verify names a pod with a sidecar in an ambient namespace).
    _restart_httpbin(cluster, [f"{DATAPLANE_MODE}=ambient", "istio-injection-"])
    assert sidecars(cluster, "httpbin") == {"httpbin/httpbin": {False}}
    before = triggers(cluster)
    run = play("site.yml", extra_vars=AMBIENT)
    assert run.rc == 0, run.output[-4000:]
    assert_ambient(cluster)
    counts = restarts(run)
    assert all(counts[name] == 1 for name in TEG_DEPLOYMENTS), counts
    after = triggers(cluster)
    assert all(after[name] and after[name] != before[name] for name in TEG_DEPLOYMENTS), (before, after)
    assert sidecars(cluster, TEG_NS) == {f"{TEG_NS}/{name}": {False} for name in TEG_DEPLOYMENTS}
    again = play("site.yml", extra_vars=AMBIENT)
    assert again.rc == 0 and again.writes == [], again.describe_writes()
    verify = play("verify.yml", extra_vars=AMBIENT)
    assert verify.rc == 0, verify.output[-4000:]


def test_teardown_in_ambient_leaves_the_cluster_as_cluster_up_left_it(play, cluster, fresh):
    """Restarting nothing: TEG's pods run without sidecars in ambient mode already (the switch back to ambient
    restarted them, which is why their restart marks differ from cluster-up's)."""
    before = snapshot(cluster)
    run = play("teardown.yml", extra_vars=dict(AMBIENT, **FULL_TEARDOWN))
    assert run.rc == 0, run.output[-4000:]
    after = snapshot(cluster)
    teg = sorted(f"{TEG_NS}/{name}" for name in TEG_DEPLOYMENTS)
    assert restarted(before, after) == []
    assert sidecars(cluster, TEG_NS) == {name: {False} for name in teg}
    assert differences_apart_from_restarts(after, fresh, teg) == []
    again = play("teardown.yml", extra_vars=dict(AMBIENT, **FULL_TEARDOWN))
    assert again.rc == 0 and again.writes == [], again.describe_writes()


def test_the_clusterroles_granted_every_request_of_the_ambient_runs(cluster, identities):
    """Every request of this module's runs (converge, rerun and verify as teg-istio alone, the switches, teardown),
    read from the audit log: none refused; what they used goes to the session's report of unused verbs."""
    users = {rbac_audit.user(rbac_audit.FULL), rbac_audit.user(rbac_audit.WITHOUT_INSTALL)}
    events = rbac_audit.events_since(cluster, identities["since"], users)
    assert events, "no request of rbac/'s ServiceAccounts in the audit log"
    assert rbac_audit.forbidden(events) == []
    alone = rbac_audit.needed(e for e in events if e["user"]["username"] == rbac_audit.user(rbac_audit.WITHOUT_INSTALL))
    assert alone and alone <= rbac_audit.granted()["teg-istio"], alone - rbac_audit.granted()["teg-istio"]
    rbac_audit.record("test_ambient", rbac_audit.needed(events))
