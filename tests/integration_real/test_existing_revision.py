"""An existing revisioned mesh, with the real istiod (issue #26): the owners run Istio by Helm on revision `stable`
only (no default revision, no `istio-injection` anywhere), with their own values and their own mesh-wide STRICT,
and an app namespace `shop` on `istio.io/rev=stable` whose pods the real istiod of that revision injected.

site.yml enrols the TEG namespace by the owners' revision (`istio.io/rev=stable`, never `istio-injection`), and the
real injector of revision stable gives TEG's restarted control-plane pods their sidecar (pod annotation
`istio.io/rev: stable`, which the injection template sets from istiod's revision); the owners' release, values and
policy are left as they were. teardown.yml gives the cluster back as it was before site.yml, every kind of
tests/integration/snapshots.py compared field by field, restarts included (TEG's Deployments restarted, none of
the owners'), and TEG's pods come back without sidecars.

Runs in a session of its own, on a cluster whose real istiod serves revision `stable`
(TEG_ISTIO_REAL_REVISION=stable, read by tests/localcp/controllers.py at `up`): `make integration-real` runs it so,
after the default-revision files. The tests of this module depend on each other's order."""

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from owners import helm, install_owners_istio  # noqa: E402  pylint: disable=wrong-import-position
from snapshots import differences_apart_from_restarts, restarted, snapshot  # noqa: E402  pylint: disable=wrong-import-position

REVISION = "stable"
pytestmark = pytest.mark.skipif(os.environ.get("TEG_ISTIO_REAL_REVISION") != REVISION,
                                reason="needs a cluster whose real istiod serves revision stable: make integration-real")

TEG_NS = "envoy-gateway-system"
OWNERS_ISTIOD_VALUES = {"revision": REVISION, "meshConfig": {"accessLogFile": "/dev/stdout"},
                        "pilot": {"env": {"OWNERS_SETTING": "kept"}}}
SHOP = {"name": "shop", "namespace": "shop", "service": "shop", "port": 8000, "hostnames": ["shop.example.com"],
        "path_prefix": "/shop"}
# The owners' policy is STRICT already and their pods are injected: nothing to force.
SITE = {"expose_app_sample": False, "expose_app_apps": [SHOP], "strict_mtls_mesh_namespaces": [TEG_NS, "shop"],
        "strict_mtls_force": False}
OWNERS_POLICY = ("PeerAuthentication", "istio-system", "default")
# The pods of TEG's Deployment envoy-gateway (tests/fixtures/teg: its selector).
CONTROL_PLANE = "control-plane=envoy-gateway"
LEADER = "control-plane.alpha.kubernetes.io/leader"
ISTIOD_ELECTIONS = ("istio-ip-autoallocate", "istio-namespace-controller-election")
# What teg_restart restarts (its defaults).
TEG_RESTARTED = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles" / "teg_restart" / "defaults" /
                                "main.yml").read_text())["teg_restart_deployments"]


def _teg_deployments(state):
    """"namespace/name" of teg_restart's Deployments that `state` has: the real Envoy Gateway manages envoy-ratelimit
    and may remove it while no rate limit is configured (test_real_controllers.py)."""
    return sorted(f"{TEG_NS}/{name}" for name in TEG_RESTARTED if ("Deployment", TEG_NS, name) in state)


def _get(cluster, *args):
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def _sidecar_revision(pod):
    """The revision whose injector gave the pod its istio-proxy (None without one)."""
    spec = pod["spec"]
    if not any(c["name"] == "istio-proxy" for c in spec.get("containers", []) + spec.get("initContainers", [])):
        return None
    return (pod["metadata"].get("annotations") or {}).get("istio.io/rev", "<no istio.io/rev annotation>")


def _pods(cluster, namespace, selector):
    """The running (not terminating) pods of a selector."""
    return [p for p in _get(cluster, "pods", "-n", namespace, "-l", selector)["items"]
            if not p["metadata"].get("deletionTimestamp")]


def _without_leader_election(state):
    """The state without the real istiod's leader-election records: it renews the lock annotation of its ConfigMaps
    in istio-system (istio-ip-autoallocate, ...) every few seconds, a write of its own, not one of the collection's."""
    out = {}
    for key, obj in state.items():
        annotations = (obj.get("metadata") or {}).get("annotations") if isinstance(obj, dict) else None
        if key[0] == "ConfigMap" and key[1] == "istio-system" and annotations and LEADER in annotations:
            obj = json.loads(json.dumps(obj))
            del obj["metadata"]["annotations"][LEADER]
            if not obj["metadata"]["annotations"]:
                del obj["metadata"]["annotations"]
        out[key] = obj
    return out


def _wait_rolled_out(cluster, namespace, deployment):
    cluster.kubectl("rollout", "status", f"deployment/{deployment}", "-n", namespace, "--timeout=180s")


@pytest.fixture(scope="module")
def owners(cluster):
    install_owners_istio(cluster, "istiod-stable", OWNERS_ISTIOD_VALUES)
    labels = {"app": "shop"}
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"istio.io/rev": REVISION}}},
        {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
         "metadata": {"name": "default", "namespace": "istio-system", "labels": {"team": "mesh-owners"}},
         "spec": {"mtls": {"mode": "STRICT"}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 8000, "targetPort": 80}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop", "namespace": "shop"},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [{"name": "app", "image": "docker.io/library/nginx:1.27",
                                                        "ports": [{"name": "http", "containerPort": 80}]}]}}}},
    ]
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    _wait_rolled_out(cluster, "shop", "shop")
    [shop_pod] = _pods(cluster, "shop", "app=shop")
    assert _sidecar_revision(shop_pod) == REVISION, shop_pod["spec"]
    [teg_pod] = _pods(cluster, TEG_NS, CONTROL_PLANE)
    assert _sidecar_revision(teg_pod) is None, "TEG's control plane is not in the mesh before site.yml"
    # The owners' running istiod writes its root certificate and CRL into every namespace and its leader-election
    # records into istio-system, a little after it sees them: the state before site.yml is the settled one.
    for namespace in ("default", TEG_NS, "shop", "istio-system"):
        for name in ("istio-ca-root-cert", "istio-ca-crl"):
            cluster.kubectl("wait", "--for=create", f"configmap/{name}", "-n", namespace, "--timeout=120s")
    for name in ISTIOD_ELECTIONS:
        cluster.kubectl("wait", "--for=create", f"configmap/{name}", "-n", "istio-system", "--timeout=120s")
    return {"before": snapshot(cluster)}


def test_teg_joins_by_the_owners_revision_and_is_injected_by_it(play, cluster, owners):
    run = play("site.yml", extra_vars=SITE)
    assert run.rc == 0, run.output[-4000:]
    labels = _get(cluster, "namespace", TEG_NS)["metadata"]["labels"]
    assert labels.get("istio.io/rev") == REVISION and "istio-injection" not in labels, labels
    _wait_rolled_out(cluster, TEG_NS, "envoy-gateway")
    pods = _pods(cluster, TEG_NS, CONTROL_PLANE)
    assert pods and all(_sidecar_revision(p) == REVISION for p in pods), [p["metadata"].get("annotations") for p in pods]
    # The owners' Istio and policy are used as they are.
    assert json.loads(helm(cluster, "get", "values", "istiod-stable", "-n", "istio-system", "-o", "json")) == \
        OWNERS_ISTIOD_VALUES
    history = json.loads(helm(cluster, "history", "istiod-stable", "-n", "istio-system", "-o", "json"))
    assert [h["revision"] for h in history] == [1], history
    assert snapshot(cluster)[OWNERS_POLICY] == owners["before"][OWNERS_POLICY]


def test_teardown_gives_the_owners_back_what_they_had(play, cluster, owners):
    run = play("teardown.yml", extra_vars=SITE)
    assert run.rc == 0, run.output[-4000:]
    # Envoy Gateway removes the Envoy Deployment and Service of Gateway apps after the Gateway is gone.
    cluster.kubectl("wait", "--for=delete", "deployment", "-n", TEG_NS,
                    "-l", "gateway.envoyproxy.io/owning-gateway-name=apps", "--timeout=120s", check=False)
    after = snapshot(cluster)
    # TEG's Deployments were restarted (into the mesh and out of it), none of the owners'.
    teg = _teg_deployments(owners["before"])
    assert restarted(owners["before"], after) == teg
    found = differences_apart_from_restarts(_without_leader_election(after), _without_leader_election(owners["before"]),
                                            teg)
    assert found == [], "\n".join(map(str, found))
    _wait_rolled_out(cluster, TEG_NS, "envoy-gateway")
    pods = _pods(cluster, TEG_NS, CONTROL_PLANE)
    assert pods and all(_sidecar_revision(p) is None for p in pods), [p["spec"]["containers"] for p in pods]
    [shop_pod] = _pods(cluster, "shop", "app=shop")
    assert _sidecar_revision(shop_pod) == REVISION
