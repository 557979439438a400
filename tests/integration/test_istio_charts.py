"""Istio's real charts: the `base` and `istio-discovery` (istiod) charts, and for ambient mode `istio-cni` (chart `cni`)
and `ztunnel`, of the istio.io/istio module the real
istiod of CONTROLLERS=real is built from (ISTIOD_MODULE_VERSION in tests/localcp/versions.env; `go mod download`
puts it into the Go module cache, as tests/localcp/controllers.py does for the injection template).

- The values are exactly those the istio_install role passes: the role installs the test stand-ins of the
  charts (tests/charts) and helm's record of that release (`helm get values`) is what is rendered here, for
  the default variables, for a revision and for ambient mode (istiod with `profile: ambient`, cni, ztunnel, the
  last two with a passthrough pod annotation).
- Every value the role passes is read by the real chart: changing it changes what the chart renders (a key
  the chart ignores, or one it renamed, is caught).
- The real API server accepts everything the charts render, by server-side dry run, as the ServiceAccount
  bound only to rbac/clusterrole.yml (so RBAC, including Kubernetes' escalation check on the charts'
  ClusterRoles and Roles, is enforced as well as the schemas).
- That identity may do to every rendered object what helm does: get, create, patch, update (upgrade with
  --force) and delete (uninstall), asked of the API server's own authorizer (SubjectAccessReview); and
  teg-istio-install grants nothing on a resource that neither chart nor the role's own uninstall touches.
- Every kind the charts create is one that the teardown comparison lists (tests/integration/snapshots.py).

The module is a 1.31 snapshot (docs/real-controllers.md), the minor of the current flavour's Istio 1.31.4, so this
checks the values against the chart the real istiod runs with, of the deployed minor. Current flavour only: no
Istio 1.19 module is served to render the legacy flavour's charts."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import MATRIX, REPO
from snapshots import KINDS

sys.path.insert(0, str(REPO / "tests" / "localcp"))
import controllers  # noqa: E402  (where the Go module cache holds the istiod module)
import localcp  # noqa: E402

pytestmark = pytest.mark.skipif(MATRIX != "current", reason="Istio's charts are rendered from the module of the "
                                "current flavour's real istiod; none is served for Istio 1.19 (docs/real-controllers.md)")

PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "istio_install.yml"
NAMESPACE = "istio-system"
SA = "system:serviceaccount:teg-istio-automation:teg-istio"
CHARTS = {"base": "manifests/charts/base", "istiod": "manifests/charts/istio-control/istio-discovery",
          "cni": "manifests/charts/istio-cni", "ztunnel": "manifests/charts/ztunnel"}
RELEASES = {"base": "istio-base", "istiod": "istiod", "cni": "istio-cni", "ztunnel": "ztunnel"}
# What helm does to a chart's objects: install (get, create), upgrade (get, patch; update with --force), uninstall.
HELM_VERBS = ("get", "create", "patch", "update", "delete")
# The role's own reads and deletes beyond the charts' objects: Helm's release records (Secrets, read by
# cluster_facts and written by helm), and Istio's CRDs, listed and deleted with istio_install_remove_crds.
ROLE_OWN = {("", "secrets"), ("apiextensions.k8s.io", "customresourcedefinitions")}


@pytest.fixture(scope="module")
def module_dir():
    return controllers.istio_module_dir(localcp.versions()["ISTIOD_MODULE_VERSION"])


def _role_values(cluster, play, **variables):
    """Install the stand-ins with the role and read back what it passed to helm: {chart: values}."""
    extra = {"istio_install_chart_path": cluster.env["TEG_ISTIO_TEST_CHARTS"],
             "istio_install_version": cluster.env["TEG_ISTIO_TEST_ISTIO_VERSION"], **variables}
    run = play(str(PLAYBOOK), extra_vars=extra, use_site_vars=False)
    assert run.rc == 0, run.output[-3000:]
    istiod = "istiod-" + variables["istio_install_revision"] if variables.get("istio_install_revision") else "istiod"
    releases = [("base", "istio-base"), ("istiod", istiod)]
    if variables.get("istio_install_mesh_mode") == "ambient":
        releases += [("cni", "istio-cni"), ("ztunnel", "ztunnel")]
    return {chart: json.loads(_helm(cluster, "get", "values", release, "-n", NAMESPACE, "-o", "json"))
            for chart, release in releases}


@pytest.fixture(scope="module")
def role_values(cluster, play):
    """The values for the default variables and for a revision, as helm recorded them; then the cluster is put
    back as cluster-up left it, so that the real charts' objects are dry-run as new ones (helm install)."""
    cluster.localcp("reset")
    values = {"default": _role_values(cluster, play),
              "revision canary": _role_values(cluster, play, istio_install_revision="canary")}
    cluster.localcp("reset")
    # With passthrough values for the ambient charts (the keys test_istio_install.py proves on the stand-ins), so that
    # the real charts are seen to take them too.
    owner = {"podAnnotations": {"example.com/owner": "mesh-team"}}
    values["ambient"] = _role_values(cluster, play, istio_install_mesh_mode="ambient", istio_install_cni_values=owner,
                                     istio_install_ztunnel_values=owner)
    cluster.localcp("reset")
    return values


def _helm(cluster, *args, stdin=None):
    proc = subprocess.run(["helm", *args], env=cluster.env, input=stdin, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"helm {' '.join(args[:3])}: {proc.stderr}"
    return proc.stdout


def _kube_version():
    return localcp.lane_versions(MATRIX)["KUBERNETES_VERSION"]


def render(cluster, module_dir, chart, values, refused=None):
    """What helm would send to this cluster (its Kubernetes version) for the chart with `values`; with `refused`
    given, that value when the chart refuses the values (as the real charts refuse an unknown `profile`)."""
    args = ["helm", "template", RELEASES[chart], str(module_dir / CHARTS[chart]), "-n", NAMESPACE, "--kube-version",
            _kube_version(), "-f", "-"]
    proc = subprocess.run(args, env=cluster.env, input=json.dumps(values), capture_output=True, text=True, check=False)
    if proc.returncode != 0 and refused is not None:
        return refused
    assert proc.returncode == 0, f"helm template {chart}: {proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _without_values_echo(objects):
    """The rendered objects without the chart's copies of its own values, which change with any value, taken or
    not: ConfigMap values[-<rev>] ("rendered for debugging purposes …; modifying these values has no effect") and
    the `values` of the injector ConfigMap (what istiod's injection templates may read at runtime: see
    _injector_reads)."""
    out = []
    for obj in objects:
        data = obj.get("data") or {}
        if obj["kind"] == "ConfigMap" and "merged-values" in data:
            obj = dict(obj, data={})
        elif obj["kind"] == "ConfigMap" and "values" in data and "config" in data:
            obj = dict(obj, data={k: v for k, v in data.items() if k != "values"})
        out.append(obj)
    return out


def _injector_reads(objects, path):
    """True when an injection template in the rendered injector ConfigMap reads .Values.<path>."""
    return any(".Values." + ".".join(path) in (obj.get("data") or {}).get("config", "")
               for obj in objects if obj["kind"] == "ConfigMap")


def _leaves(values, path=()):
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + (key,))
        else:
            yield path + (key,), value


def _with(values, path, value):
    copy = json.loads(json.dumps(values))
    node = copy
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return copy


def ignored_values(cluster, module_dir, chart, values):
    """The leaves of `values` the chart does not take: changing one changes nothing it renders (beyond its copies
    of the values) and no injection template reads it."""
    rendered = render(cluster, module_dir, chart, values)
    ignored = []
    for path, value in _leaves(values):
        probe = (value + "-probe") if isinstance(value, str) else (not value if isinstance(value, bool) else "probe")
        # A probe the chart refuses (an unknown profile) is a value it reads.
        changed = render(cluster, module_dir, chart, _with(values, path, probe), refused="refused")
        if changed != "refused" and _without_values_echo(changed) == _without_values_echo(rendered) \
                and not _injector_reads(rendered, path):
            ignored.append(".".join(path))
    return ignored


def test_every_value_the_role_passes_is_read_by_the_real_charts(cluster, module_dir, role_values):
    for variant, charts in role_values.items():
        for chart, values in charts.items():
            assert values, (variant, chart)
            assert ignored_values(cluster, module_dir, chart, values) == [], (variant, chart, values)


def test_a_value_the_real_chart_does_not_take_is_caught(cluster, module_dir, role_values):
    """The check above can fail: a misspelt key is reported (the chart renders the same without it)."""
    values = _with(role_values["default"]["istiod"], ("global", "istioNamespce"), "istio-system")
    assert ignored_values(cluster, module_dir, "istiod", values) == ["global.istioNamespce"]


@pytest.fixture(scope="module")
def rendered(cluster, module_dir, role_values):
    """Every object the real charts render with the role's values, by variant."""
    return {variant: [obj for chart, values in charts.items() for obj in render(cluster, module_dir, chart, values)]
            for variant, charts in role_values.items()}


@pytest.fixture(scope="module")
def automation_identity(cluster, rendered):
    """The ServiceAccount of rbac/binding-example.yml bound to rbac/clusterrole.yml, on a cluster where Istio's
    namespace exists (the role creates it before helm runs)."""
    manifests = [REPO / "rbac" / "clusterrole.yml", REPO / "rbac" / "binding-example.yml"]
    cluster.kubectl("apply", *[arg for path in manifests for arg in ("-f", str(path))])
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    yield SA
    # Neither the RBAC (no label `reset` knows) nor Istio's namespace may outlive this module: the test
    # files after it start from the fixture.
    cluster.kubectl("delete", "--ignore-not-found", "--wait=false",
                    *[arg for path in reversed(manifests) for arg in ("-f", str(path))])
    cluster.localcp("reset")


def test_the_api_server_accepts_the_real_charts_from_the_automation_identity(cluster, rendered, automation_identity):
    for variant, objects in rendered.items():
        stream = yaml.safe_dump_all(objects)
        proc = cluster.kubectl("apply", "--server-side", "--dry-run=server", f"--as={automation_identity}",
                               "-n", NAMESPACE, "-f", "-", stdin=stream, check=False)
        assert proc.returncode == 0, (variant, proc.stderr)
        assert proc.stdout.count("serverside-applied (server dry run)") == len(objects), (variant, proc.stdout)


def _resources(k8s, objects):
    """(group, resource, namespaced) of each rendered object, from the API server's discovery."""
    out = set()
    for obj in objects:
        api = k8s.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        out.add((api.group, api.name, api.namespaced))
    return out


def _allowed(k8s, user, verb, group, resource, namespace):
    review = k8s.resources.get(api_version="authorization.k8s.io/v1", kind="SubjectAccessReview").create(body={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                 "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                        "namespace": namespace or ""}}})
    return review.status.allowed


def test_the_clusterroles_grant_what_helm_does_to_every_rendered_object(k8s, rendered, automation_identity):
    needed = set().union(*(_resources(k8s, objects) for objects in rendered.values()))
    missing = [(verb, group, resource) for group, resource, namespaced in sorted(needed) for verb in HELM_VERBS
               if not _allowed(k8s, automation_identity, verb, group, resource, NAMESPACE if namespaced else None)]
    assert missing == [], missing


def test_teg_istio_install_grants_nothing_the_charts_or_the_role_do_not_use(k8s, rendered, cluster, charts_kinds):
    needed = {(group, resource) for objects in rendered.values() for group, resource, _ns in _resources(k8s, objects)}
    needed |= charts_kinds | ROLE_OWN
    roles = yaml.safe_load((REPO / "rbac" / "clusterrole.yml").read_text())["items"]
    [install] = [r for r in roles if r["metadata"]["name"] == "teg-istio-install"]
    granted = {(group, resource) for rule in install["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"]}
    assert granted - needed == set(), "granted but used by neither the charts nor the role"


@pytest.fixture(scope="module")
def charts_kinds(k8s, cluster):
    """(group, resource) of what the test stand-ins of the charts create (tests/charts), which the role
    installs in every other test."""
    out = set()
    for chart in ("base", "istiod", "cni", "ztunnel"):
        text = _helm(cluster, "template", "x", str(cluster.state_dir / "charts" / "dirs" / chart), "-n", NAMESPACE,
                     "--include-crds", "--kube-version", _kube_version())
        for obj in (d for d in yaml.safe_load_all(text) if d):
            api = k8s.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            out.add((api.group, api.name))
    return out


def test_the_teardown_comparison_lists_every_kind_the_charts_create(rendered):
    created = {obj["kind"] for objects in rendered.values() for obj in objects}
    assert created - KINDS == set()


def test_the_module_comes_from_the_go_module_cache(module_dir):
    """Fetched by `go mod download` of the pinned version (a fresh machine gets it from the module proxy)."""
    gomodcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True,
                                env=os.environ).stdout.strip()
    assert str(module_dir).startswith(gomodcache)
    assert module_dir.name == "istio@" + localcp.versions()["ISTIOD_MODULE_VERSION"]
