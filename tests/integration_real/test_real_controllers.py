"""site.yml against a cluster where the real Envoy Gateway controller and the real istiod run: the
objects the procedure writes are accepted by Envoy Gateway, turned into Envoy pods with the sidecar
annotation, and istiod injects those pods without inbound interception and the app pods with it.

Run as a user would on such a cluster: first in check mode (it reports what it would create and writes
nothing), then for real without strict_mtls_force (every pod of the mesh namespaces really has a sidecar, so
STRICT's safety check passes on its own), then once more: the playbook writes nothing and restarts nothing,
although Envoy Gateway created the Envoy Deployment after the first run's teg_restart."""

import json
import shlex
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "localcp"))
import controllers  # noqa: E402  pylint: disable=wrong-import-position
import localcp  # noqa: E402  pylint: disable=wrong-import-position

TEG_NAMESPACE = "envoy-gateway-system"
# What teg_restart restarts in the TEG namespace (roles/teg_restart/defaults/main.yml). Envoy Gateway
# manages envoy-ratelimit itself (it carries its managed-by label) and may remove it while no rate limit
# is configured, so only the others must exist.
TEG_CONTROL_PLANE = ("envoy-gateway", "envoy-ratelimit", "teg-envoy-gateway", "teg-redis")
EG_MANAGED = ("envoy-ratelimit",)
ENVOY_SELECTOR = "app.kubernetes.io/managed-by=envoy-gateway,app.kubernetes.io/component=proxy"
ANNOTATION = "traffic.sidecar.istio.io/includeInboundPorts"


def get(cluster, *args):
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def condition(obj, kind):
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return cond
    return None


def sidecar(pod):
    """The injected istio-proxy container: a regular container, or a native sidecar (init container
    with restartPolicy Always)."""
    spec = pod["spec"]
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        if container["name"] == "istio-proxy":
            return container
    return None


def inbound_ports(pod):
    """The value of istio-iptables' `-b` (inbound ports to intercept) in the injected istio-init
    container, which is where the template puts the includeInboundPorts annotation."""
    init = next((c for c in pod["spec"].get("initContainers", []) if c["name"] == "istio-init"), None)
    assert init, f"pod {pod['metadata']['name']} has no istio-init container: {pod['spec'].get('initContainers')}"
    args = init.get("args") or []
    if "-b" not in args:  # older templates pass one shell string
        args = shlex.split(" ".join(args))
    assert "-b" in args, f"istio-init of {pod['metadata']['name']} has no -b argument: {args}"
    return args[args.index("-b") + 1]


# The site vars force STRICT for the stand-in controllers, whose pods never get sidecars; here they do.
NO_FORCE = {"strict_mtls_force": False}
# The playbook's identity; the controllers and the load-balancer stand-in write under their own
# (tests/localcp/controllers.py).
PLAYBOOK_USER = "admin"


def playbook_writes(run):
    return [f"{e['verb']} {e['requestURI']}" for e in run.writes if e["user"]["username"] == PLAYBOOK_USER]


@pytest.fixture(scope="module")
def check_run(play, cluster):
    """site.yml --check on the fresh cluster, before anything is applied."""
    # One JSON document per task result: each message on one line, as the role wrote it (the yaml result
    # format of ansible.cfg folds long strings).
    return play("site.yml", extra_vars=NO_FORCE, check=True, env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})


@pytest.fixture(scope="module")
def site(play, cluster, check_run):
    run = play("site.yml", extra_vars=NO_FORCE)
    assert run.rc == 0, run.output[-4000:]
    # Envoy Gateway writes status asynchronously; wait until it has reported on every object.
    cluster.kubectl("wait", "--for=condition=Accepted", "gatewayclass/teg", "--timeout=120s")
    cluster.kubectl("wait", "--for=condition=Accepted", "gateway", "--all", "-A", "--timeout=120s")
    cluster.kubectl("wait", "--for=condition=Programmed", "gateway", "--all", "-A", "--timeout=180s", check=False)
    return run


def test_check_mode_reports_what_it_would_create_and_writes_nothing(check_run):
    assert check_run.rc == 0, check_run.output[-4000:]
    assert playbook_writes(check_run) == []
    assert check_run.recap()["changed"] > 0
    # expose_app's objects in a namespace that does not exist yet, and of an Istio kind only predicted:
    # reported, not dry-run (docs/architecture.md).
    [line] = [line for line in check_run.output.splitlines() if "would create " in line and "HTTPRoute" in line]
    for what in ("Deployment httpbin/httpbin", "HTTPRoute httpbin/httpbin",
                 "VirtualService envoy-gateway-system/apps-www.example.com"):
        assert what in line, line


def test_strict_mtls_needs_no_force_where_pods_are_injected(site, cluster):
    assert "STRICT mTLS would cut off" not in site.output
    assert "strict_mtls_force is set" not in site.output
    mode = cluster.kubectl("get", "peerauthentication", "default", "-n", "istio-system", "-o",
                           "jsonpath={.spec.mtls.mode}").stdout
    assert mode == "STRICT"


def _minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


def test_istiod_runs_as_the_deployed_minor_by_its_compatibility_profile(cluster):
    """The real istiod is a build of an Istio snapshot (versions.env) and must behave as the deployed minor, the
    current flavour's Istio's. Where the snapshot is of a later minor, the chart sets `compatibilityVersion`, whose
    profile (the module's manifests/helm-profiles/compatibility-version-<minor>.yaml, read here) sets pilot env flags
    that keep the deployed minor's behaviour, and istiod's own report of its environment (ControlZ's env topic, JSON
    at /envj/: istio pkg/ctrlz/topics/env.go) carries every one of them. Where the snapshot is of the deployed minor
    itself (its VERSION file), no profile applies: istiod runs with none of the flags of the newest profile, the
    previous minor's, which would turn the deployed minor's own behaviour changes off."""
    pins = localcp.versions()
    minor = pins["ISTIOD_COMPATIBILITY_VERSION"]
    deployed = localcp.MATRIX["current"]["istio"].removeprefix("istio-")
    assert _minor(minor) == _minor(deployed), (minor, deployed)
    module = controllers.istio_module_dir(pins["ISTIOD_MODULE_VERSION"])
    profiles = module / "manifests" / "helm-profiles"
    state = json.loads((cluster.state_dir / "controllers" / "state.json").read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{state['ports']['istiod']['ctrlz']}/envj/", timeout=10) as resp:
        running = {var["name"]: var["value"] for var in json.loads(resp.read())}
    # The report is of the environment controllers.start_istiod gave istiod (ambient on, as the chart's profile).
    assert running.get("PILOT_ENABLE_AMBIENT") == "true", sorted(running)
    own = controllers.module_minor(module)
    if minor == own:
        newest = max(profiles.glob("compatibility-version-*.yaml"),
                     key=lambda path: _minor(path.stem.removeprefix("compatibility-version-")))
        assert _minor(newest.stem.removeprefix("compatibility-version-")) == (_minor(own)[0], _minor(own)[1] - 1)
        flags = sorted(yaml.safe_load(newest.read_text())["pilot"]["env"])
        assert flags, f"the compatibility profile {newest.name} sets no pilot env: nothing to check"
        assert {name: running.get(name) for name in flags} == dict.fromkeys(flags)
    else:
        profile = yaml.safe_load((profiles / f"compatibility-version-{minor}.yaml").read_text())
        wanted = {name: str(value) for name, value in profile["pilot"]["env"].items()}
        assert wanted, f"the compatibility profile {minor} sets no pilot env: nothing to check"
        assert {name: running.get(name) for name in wanted} == wanted


def envoy_deployments(cluster):
    return get(cluster, "deployments", "-n", TEG_NAMESPACE, "-l", ENVOY_SELECTOR)["items"]


def test_gatewayclass_accepted(site, cluster):
    cond = condition(get(cluster, "gatewayclass", "teg"), "Accepted")
    assert cond and cond["status"] == "True", cond


def test_gateway_apps_accepted_and_programmed(site, cluster):
    gateways = [g for g in get(cluster, "gateways", "-A")["items"] if g["metadata"]["name"] == "apps"]
    assert gateways, "no Gateway apps"
    for gateway in gateways:
        accepted = condition(gateway, "Accepted")
        assert accepted and accepted["status"] == "True", accepted
        # Programmed needs an address: controllers.py's stand-in load-balancer controller gives one.
        programmed = condition(gateway, "Programmed")
        assert programmed and programmed["status"] == "True", programmed


def test_every_httproute_accepted_and_resolved(site, cluster):
    routes = get(cluster, "httproutes", "-A")["items"]
    assert routes, "site.yml made no HTTPRoute"
    for route in routes:
        parents = (route.get("status") or {}).get("parents") or []
        assert parents, f"HTTPRoute {route['metadata']['name']} has no parent status"
        for parent in parents:
            kinds = {c["type"]: c["status"] for c in parent.get("conditions", [])}
            assert kinds.get("Accepted") == "True" and kinds.get("ResolvedRefs") == "True", (
                route["metadata"]["name"], parent)


def test_envoy_deployment_carries_the_annotation(site, cluster):
    deployments = envoy_deployments(cluster)
    assert deployments, "Envoy Gateway created no Envoy Deployment"
    for deployment in deployments:
        annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        assert annotations.get(ANNOTATION) == "", (deployment["metadata"]["name"], annotations)


def test_envoy_pods_injected_without_inbound_interception(site, cluster):
    pods = get(cluster, "pods", "-n", TEG_NAMESPACE, "-l", ENVOY_SELECTOR)["items"]
    assert pods, "no Envoy pod"
    for pod in pods:
        name = pod["metadata"]["name"]
        assert sidecar(pod), f"Envoy pod {name} has no istio-proxy"
        assert "sidecar.istio.io/status" in pod["metadata"].get("annotations", {}), f"{name} not injected by istiod"
        assert inbound_ports(pod) == "", f"Envoy pod {name} intercepts inbound ports: -b {inbound_ports(pod)!r}"


def test_httpbin_pods_injected_with_full_inbound_interception(site, cluster):
    pods = get(cluster, "pods", "-n", "httpbin")["items"]
    assert pods, "no httpbin pod"
    for pod in pods:
        assert sidecar(pod), f"httpbin pod {pod['metadata']['name']} has no istio-proxy"
        assert inbound_ports(pod) == "*", pod["metadata"]["name"]


def test_restarted_teg_control_plane_pods_carry_sidecars(site, cluster):
    pods = get(cluster, "pods", "-n", TEG_NAMESPACE)["items"]
    existing = {d["metadata"]["name"] for d in get(cluster, "deployments", "-n", TEG_NAMESPACE)["items"]}
    for deployment in TEG_CONTROL_PLANE:
        if deployment not in existing:
            assert deployment in EG_MANAGED, f"Deployment {deployment} is gone"
            continue
        mine = [p for p in pods if p["metadata"]["name"].startswith(deployment + "-")
                and not p["metadata"].get("deletionTimestamp")]
        assert mine, f"no pod of Deployment {deployment}"
        for pod in mine:
            assert sidecar(pod), f"{pod['metadata']['name']} has no istio-proxy"


def test_verify_at_status_level_passes(site, play):
    run = play("verify.yml", extra_vars={"verify_level": "status"})
    assert run.rc == 0, run.output[-4000:]


def _rollouts(cluster, namespace):
    """Per Deployment its generation and revision, and the uids of the pods: what a restart changes."""
    deployments = {d["metadata"]["name"]: (d["metadata"]["generation"],
                                           d["metadata"]["annotations"].get("deployment.kubernetes.io/revision"))
                   for d in get(cluster, "deployments", "-n", namespace)["items"]}
    pods = sorted(p["metadata"]["uid"] for p in get(cluster, "pods", "-n", namespace)["items"])
    return deployments, pods


def _trigger(deployment):
    return (deployment["spec"]["template"]["metadata"].get("annotations") or {}).get("teg.istio/restart-trigger")


def test_a_second_run_writes_nothing_and_restarts_nothing(site, play, cluster):
    """Envoy Gateway created the Envoy Deployment when expose_app added Gateway apps, after teg_restart ran: it
    records no restart trigger, but its pods are injected by the current istiod, so it is not restarted."""
    envoy = envoy_deployments(cluster)
    assert envoy and all(_trigger(d) is None for d in envoy), [d["metadata"]["name"] for d in envoy]
    before = {ns: _rollouts(cluster, ns) for ns in (TEG_NAMESPACE, "httpbin")}
    again = play("site.yml", extra_vars=NO_FORCE)
    assert again.rc == 0, again.output[-4000:]
    assert again.recap()["changed"] == 0
    assert playbook_writes(again) == []
    assert {ns: _rollouts(cluster, ns) for ns in (TEG_NAMESPACE, "httpbin")} == before
