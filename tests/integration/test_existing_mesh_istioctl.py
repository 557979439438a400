"""site.yml and teardown.yml on the other mesh a platform team often runs (issue #26): Istio installed by istioctl
(no Helm release; istiod with the owners' mesh configuration), a mesh-wide PeerAuthentication of the owners' that
is PERMISSIVE, and an app of theirs already in the mesh (namespace shop, istio-injection=enabled, its pod injected).

site.yml with the default variables uses that istiod as it is (no Helm release made, nothing of istio-system
written), switches the owners' mesh-wide policy to STRICT (the procedure's step 6) after the safety check passed on
the injected pods, and records its prior mode on it; a rerun writes nothing; teardown.yml gives the cluster back as
it was before site.yml, every kind of tests/integration/snapshots.py compared field by field, restarts included
(PERMISSIVE back, the istiod left, TEG back out of the mesh, the owners' app neither restarted nor unlabelled); a
second teardown writes nothing. test_existing_mesh.py is the Helm-installed, revisioned, already-STRICT mesh.

The tests of this module depend on each other's order (pytest runs them top to bottom)."""

import json

import pytest

from owners import helm, install_owners_istio_as_istioctl
from snapshots import snapshot
from test_existing_mesh import HTTPBIN, PRIOR, SHOP, TEG_NS, _app, _assert_given_back, _kubectl_apply, _namespace

OWNERS_MESH_CONFIG = {"meshConfig": {"accessLogFile": "/dev/stdout"}}
SITE = {"expose_app_apps": [HTTPBIN, SHOP], "strict_mtls_mesh_namespaces": [TEG_NS, "httpbin", "shop"]}
POLICY = ("PeerAuthentication", "istio-system", "default")
CLUSTER_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ClusterRole",
                 "ClusterRoleBinding")


def _policy(cluster):
    return json.loads(cluster.kubectl("-n", "istio-system", "get", "peerauthentication", "default", "-o",
                                      "json").stdout)


@pytest.fixture(scope="module")
def owners(cluster):
    """The owners' istioctl-installed mesh on a fresh cluster, and the state of every kind before site.yml."""
    cluster.localcp("reset")
    installed = install_owners_istio_as_istioctl(cluster, OWNERS_MESH_CONFIG)
    version_pa = "security.istio.io/v1" if cluster.matrix == "current" else "security.istio.io/v1beta1"
    _kubectl_apply(cluster, [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}},
        {"apiVersion": version_pa, "kind": "PeerAuthentication",
         "metadata": {"name": "default", "namespace": "istio-system", "labels": {"team": "mesh-owners"}},
         "spec": {"mtls": {"mode": "PERMISSIVE"}}}])
    _kubectl_apply(cluster, _app("shop"))
    cluster.kubectl("-n", "shop", "rollout", "status", "deployment/shop", "--timeout=180s")
    pods = json.loads(cluster.kubectl("-n", "shop", "get", "pods", "-o", "json").stdout)["items"]
    assert pods and all("istio-proxy" in [c["name"] for c in p["spec"]["containers"]] for p in pods), \
        "the owners' app is not in the mesh before site.yml"
    yield {"before": snapshot(cluster)}
    # istioctl's cluster-scoped objects carry no Helm label, so reset would leave them.
    for obj in installed:
        if obj["kind"] in CLUSTER_KINDS:
            cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found")
    cluster.localcp("reset")


def test_site_uses_the_istioctl_istio_and_switches_the_owners_permissive_policy_with_a_record(play, cluster, owners):
    run = play("site.yml", extra_vars=SITE)
    assert run.rc == 0, run.output[-4000:]
    # The owners' istiod is used as it is. Its Istio is the lane's: past its end of life in the legacy lane (1.19), so
    # the plan says so; supported in the current one (1.31), so it says nothing.
    version = cluster.env["TEG_ISTIO_TEST_ISTIO_VERSION"]
    past_end_of_life = [line for line in run.warnings() if line.startswith(
        "The running istiod istio-system/istiod: Istio %s is past its end of life (" % version)]
    assert bool(past_end_of_life) == {"legacy": True, "current": False}[cluster.matrix], run.output[-4000:]
    applied = snapshot(cluster)
    # No Helm release anywhere in istio-system, and nothing there written: the istiod, its injector, its config.
    assert json.loads(helm(cluster, "list", "-n", "istio-system", "-o", "json")) == []
    written = sorted({(e["objectRef"]["resource"], e["objectRef"].get("name")) for e in run.writes
                      if e["objectRef"].get("namespace") == "istio-system"})
    assert written == [("peerauthentications", "default")], written
    for key, value in owners["before"].items():
        if key[1] == "istio-system" and key != POLICY or key[0] in CLUSTER_KINDS:
            assert applied.get(key) == value, key
    # The owners' policy: STRICT now, its prior mode recorded on it, the rest of it theirs.
    policy = _policy(cluster)
    assert policy["spec"] == {"mtls": {"mode": "STRICT"}}
    assert policy["metadata"]["labels"] == {"team": "mesh-owners"}
    assert json.loads(policy["metadata"]["annotations"][PRIOR]) == {"/spec/mtls/mode": ["PERMISSIVE", "STRICT"]}
    # The owners' meshed namespace keeps its label, gets no record, and its app was not restarted.
    meta = _namespace(cluster, "shop")
    assert meta["labels"]["istio-injection"] == "enabled" and PRIOR not in (meta.get("annotations") or {})
    assert applied[("Deployment", "shop", "shop")] == owners["before"][("Deployment", "shop", "shop")]


def test_a_rerun_writes_nothing(play):
    run = play("site.yml", extra_vars=SITE)
    assert run.rc == 0, run.output[-4000:]
    assert run.writes == [], run.describe_writes()


def test_teardown_gives_back_permissive_leaves_istio_and_a_second_writes_nothing(play, cluster, owners):
    run = play("teardown.yml", extra_vars=SITE)
    assert run.rc == 0, run.output[-4000:]
    policy = _policy(cluster)
    assert policy["spec"] == {"mtls": {"mode": "PERMISSIVE"}}
    assert PRIOR not in (policy["metadata"].get("annotations") or {})
    _assert_given_back(cluster, owners["before"])
    again = play("teardown.yml", extra_vars=SITE)
    assert again.rc == 0 and again.writes == [], again.describe_writes()
