"""Drain during rollouts (issue #16, item 1), with the real Envoy Gateway controller and istiod: the Envoy pods'
sidecar outlives Envoy's drain. site.yml with teg_istio_prep_sidecar_drain auto (Kubernetes 1.34, Istio 1.29)
gives the EnvoyProxy sidecar.istio.io/nativeSidecar "true"; Envoy Gateway copies it onto its Envoy pods and
istiod injects istio-proxy as a restartable init container (restartPolicy Always), which Kubernetes stops only
after Envoy has exited. With drain_duration, istiod puts the proxy.istio.io/config annotation into the
sidecar's proxy configuration (its PROXY_CONFIG environment variable): terminationDrainDuration equals Envoy
Gateway's drain timeout (default 60s)."""

import json
import time
from pathlib import Path

import pytest

TEG_NAMESPACE = "envoy-gateway-system"
ENVOY_SELECTOR = "app.kubernetes.io/managed-by=envoy-gateway,app.kubernetes.io/component=proxy"
NATIVE = "sidecar.istio.io/nativeSidecar"
PROXY_CONFIG = "proxy.istio.io/config"
ROLE = str(Path(__file__).resolve().parents[1] / "integration" / "playbooks" / "teg_istio_prep.yml")


def get(cluster, *args):
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def site(play, cluster):
    # The site vars force STRICT for the stand-in controllers, whose pods never get sidecars; here they do.
    run = play("site.yml", extra_vars={"strict_mtls_force": False})
    assert run.rc == 0, run.output[-4000:]
    yield run
    cluster.localcp("reset")  # the next module starts from a fresh cluster


def _envoy_pods(cluster, wanted, timeout=240):
    """The Envoy pods once every one not being deleted satisfies `wanted` (Envoy Gateway rolls its Deployment
    when the EnvoyProxy's pod annotations change)."""
    deadline = time.monotonic() + timeout
    pods = []
    while time.monotonic() < deadline:
        pods = [p for p in get(cluster, "pods", "-n", TEG_NAMESPACE, "-l", ENVOY_SELECTOR)["items"]
                if not p["metadata"].get("deletionTimestamp")]
        if pods and all(wanted(p) for p in pods):
            return pods
        time.sleep(2)
    raise AssertionError("Envoy pods not as wanted after %ss: %s" % (timeout, [
        (p["metadata"]["name"], p["metadata"].get("annotations"), _names(p["spec"].get("initContainers")),
         _names(p["spec"]["containers"])) for p in pods]))


def _names(containers):
    return [c["name"] for c in containers or []]


def _proxy(containers):
    return next((c for c in containers or [] if c["name"] == "istio-proxy"), None)


def test_envoy_pods_run_istio_proxy_as_a_native_sidecar(site, cluster):
    pods = _envoy_pods(cluster, lambda p: (p["metadata"].get("annotations") or {}).get(NATIVE) == "true"
                       and _proxy(p["spec"].get("initContainers")) is not None)
    for pod in pods:
        spec = pod["spec"]
        print("Envoy pod", pod["metadata"]["name"], "initContainers",
              [(c["name"], c.get("restartPolicy")) for c in spec.get("initContainers") or []],
              "containers", _names(spec["containers"]))
        assert "sidecar.istio.io/status" in pod["metadata"]["annotations"]
        assert _proxy(spec["initContainers"])["restartPolicy"] == "Always"
        assert _proxy(spec["containers"]) is None


def _proxy_config(pod):
    proxy = _proxy(pod["spec"]["containers"]) or _proxy(pod["spec"].get("initContainers")) or {}
    value = next((e.get("value") for e in proxy.get("env") or [] if e["name"] == "PROXY_CONFIG"), None)
    return json.loads(value) if value else {}


def test_with_drain_duration_the_sidecar_drains_as_long_as_envoy(site, play, cluster):
    # auto left nativeSidecar on the EnvoyProxy TEG installed; drain_duration does not take it off.
    ep = get(cluster, "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", "-n", TEG_NAMESPACE)
    annotations = ep["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["annotations"]
    assert annotations[NATIVE] == "true"
    off = {"spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {"pod": {"annotations": {
        NATIVE: None}}}}}}}
    cluster.kubectl("patch", "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", "-n", TEG_NAMESPACE,
                    "--type=merge", "-p", json.dumps(off))
    try:
        run = play(ROLE, extra_vars={"teg_istio_prep_sidecar_drain": "drain_duration"}, use_site_vars=False)
        assert run.rc == 0, run.output[-4000:]
        pods = _envoy_pods(cluster, lambda p: PROXY_CONFIG in (p["metadata"].get("annotations") or {})
                           and _proxy(p["spec"]["containers"]) is not None)
        for pod in pods:
            config = _proxy_config(pod)
            print("Envoy pod", pod["metadata"]["name"], "PROXY_CONFIG", config)
            assert config.get("terminationDrainDuration") == "60s", config
            assert _proxy(pod["spec"].get("initContainers")) is None
    finally:
        # Back to what site.yml leaves (auto: native).
        undo = {"spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {"pod": {"annotations": {
            PROXY_CONFIG: None}}}}}}}
        cluster.kubectl("patch", "envoyproxies.gateway.envoyproxy.io", "teg-envoy-proxy", "-n", TEG_NAMESPACE,
                        "--type=merge", "-p", json.dumps(undo))
        again = play(ROLE, use_site_vars=False)
        assert again.rc == 0, again.output[-4000:]
