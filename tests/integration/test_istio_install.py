"""istio_install against the local control plane, on the flavour of $MATRIX, with real helm.

The charts are the test stand-ins of tests/charts (base carries the flavour's real Istio CRDs; istiod
has Istio's object names and an injector that can touch no pod), staged by tests/charts/prepare.py
into the cluster's state directory at the flavour's Istio version. They are installed from a local
directory (air gap) and from a chart repository served on 127.0.0.1 (a mirror).

The tests run in file order and share one cluster: bad input and check mode on a cluster without
Istio first, then install, rerun, upgrade, manage=false, uninstall, and a revisioned install from
the mirror."""

import base64
import functools
import gzip
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
import yaml
from kubernetes.dynamic.exceptions import NotFoundError

from conftest import JSON_CALLBACK, assert_one_line_failure, task_results
from owners import helm

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "istio_install.yml"
NAMESPACE = "istio-system"
FLAVOURS = {
    # Istio version; the versions under which the flavour's real CRDs serve VirtualService and
    # PeerAuthentication (v1 from Istio 1.22 on).
    "current": {"istio": "1.31.4", "virtualservices": {"v1", "v1beta1", "v1alpha3"},
                "peerauthentications": {"v1", "v1beta1"}},
    "legacy": {"istio": "1.19.10", "virtualservices": {"v1beta1", "v1alpha3"}, "peerauthentications": {"v1beta1"}},
}
LIMITED_SA = "teg-istio-limited"


@pytest.fixture(scope="module")
def flavour(cluster):
    return FLAVOURS[cluster.matrix]


@pytest.fixture(scope="module", autouse=True)
def without_istio(cluster):
    """The tests of this file start from a cluster without Istio, whatever the files before it left."""
    cluster.localcp("reset")


@pytest.fixture(scope="module")
def charts(cluster):
    out = cluster.state_dir / "charts"
    subprocess.run([sys.executable, str(REPO / "tests" / "charts" / "prepare.py"), str(out), "--matrix", cluster.matrix],
                   check=True, env=cluster.env, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def mirror(charts):
    """The staged archives and their index.yaml served as a chart repository on 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(charts / "archives"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


MIRROR_CREDENTIALS = ("mirror-user", "mirror-pass")


class _BasicAuthHandler(_QuietHandler):
    """A mirror that, like a company's Artifactory or Nexus, wants basic authentication."""

    def do_GET(self):
        expected = "Basic " + base64.b64encode(":".join(MIRROR_CREDENTIALS).encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="charts"')
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture(scope="module")
def private_mirror(charts):
    handler = functools.partial(_BasicAuthHandler, directory=str(charts / "archives"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def run(play, flavour, charts):
    def _run(check=False, env=None, **variables):
        extra = {"istio_install_version": flavour["istio"],
                 "istio_install_chart_path": str(charts / "archives")}
        extra.update(variables)
        return play(str(PLAYBOOK), extra_vars=extra, check=check, use_site_vars=False,
                    env=dict({"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}, **(env or {})))
    return _run


@pytest.fixture(scope="module")
def refuse(run):
    """Run the role expecting a refusal: (result, its one line naming `cause` and `fix`)."""
    def _refuse(cause, fix, env=None, **variables):
        result = run(env=dict(JSON_CALLBACK, **(env or {})), **variables)
        return result, assert_one_line_failure(result, cause, fix)
    return _refuse


def releases(cluster):
    # Helm 4 lists releases in every state by default and has no --all (helm.sh/helm/v4 pkg/cmd/list.go).
    every_state = ["--all"] if _helm_major(cluster) < 4 else []
    return {r["name"]: r for r in json.loads(helm(cluster, "list", "-A", *every_state, "-o", "json"))}


def _helm_major(cluster):
    return int(helm(cluster, "version", "--short").strip().lstrip("v").split(".")[0])


def served(k8s, group, plural):
    """The versions of `group` under which the API server serves `plural`."""
    try:
        versions = [v["version"] for v in k8s.request("GET", f"/apis/{group}")["versions"]]
    except NotFoundError:
        # Only "not served at all" reads as no version; any other failure of the read fails the test.
        return set()
    return {v for v in versions
            if any(r["name"] == plural for r in k8s.request("GET", f"/apis/{group}/{v}")["resources"])}


def kubectl_json(cluster, *args):
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def exists(cluster, *args):
    return cluster.get_or_none(*args) is not None


def istio_crds(cluster):
    names = cluster.kubectl("get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    return sorted(n for n in names if n.endswith(".istio.io"))


def upstream_istio_crds(cluster, version):
    """The CRD names of Istio `version`'s own crd-all.gen.yaml (14 for 1.19, 15 for 1.31: TrafficExtension came in
    1.30)."""
    text = (cluster.crds / f"istio-{version}" / "crd-all.gen.yaml").read_text()
    return sorted(doc["metadata"]["name"] for doc in yaml.safe_load_all(text)
                  if doc and doc["kind"] == "CustomResourceDefinition")


# --- a cluster without Istio: check mode and bad input ----------------------------------------------

# The Kubernetes minors each flavour's Istio supports as the role's table has them (istio.io/latest/docs/releases/
# supported-releases: 1.32 to 1.37 for Istio 1.31, so the current lane's v1.37 is inside it; Istio 1.19 is older
# than the table, whose oldest row, 1.24's, it takes, so the legacy lane's v1.34 is newer than it).
SUPPORTED_KUBERNETES = {"1.31.4": (32, 37), "1.19.10": (28, 31)}
PLAN_TASK = "Read Istio's Deployments, its injector and the Helm releases, check the charts and plan the install"


def test_check_mode_on_a_fresh_cluster_predicts_and_writes_nothing(cluster, run, flavour):
    result = run(check=True, env=JSON_CALLBACK)
    assert result.rc == 0, result.output[-3000:]
    # Sidecar mode on a Kubernetes outside the range the pinned Istio supports is warned about by the plan, not
    # refused; inside it, nothing is said.
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    minor = int(server.lstrip("v").split(".")[1])
    low, high = SUPPORTED_KUBERNETES[flavour["istio"]]
    (planned,) = task_results(result, PLAN_TASK)
    about_kubernetes = [w for w in planned.get("warnings") or [] if w.startswith("Kubernetes ")]
    if minor > high:
        assert len(about_kubernetes) == 1 and about_kubernetes[0].startswith(
            "Kubernetes %s is newer than the versions Istio %s was tested with (1.%d to 1.%d, "
            % (server, flavour["istio"], low, high)), about_kubernetes
    else:
        assert low <= minor and about_kubernetes == [], about_kubernetes
    assert result.recap()["changed"] == 1  # one helm_releases task: the namespace, base and istiod
    assert result.writes == [], result.describe_writes()
    # The namespace went to the API server as a dry run; helm only read.
    assert any(e["objectRef"]["resource"] == "namespaces" for e in result.dry_runs)
    assert "check mode: would create namespace istio-system, install or upgrade istio-base and istiod" in result.stdout
    assert releases(cluster) == {}
    assert not exists(cluster, "namespace", NAMESPACE)


def test_chart_version_missing_in_the_local_directory(refuse, charts, flavour):
    result, msg = refuse(["chart base and istiod version 1.2.3 not found in the local chart directory"],
                         ["put them there (helm pull istio/base --version 1.2.3) or set istio_install_version"],
                         istio_install_version="1.2.3")
    version = flavour["istio"]
    assert msg == (f"chart base and istiod version 1.2.3 not found in the local chart directory {charts / 'archives'} "
                   f"(looked for <chart>-1.2.3.tgz and <chart>/; it holds: base-{version}.tgz, istiod-{version}.tgz): "
                   "put them there (helm pull istio/base --version 1.2.3) or set istio_install_version")
    assert result.writes == []


def test_chart_directory_missing(refuse, cluster):
    result, msg = refuse(["/nonexistent/charts does not exist"], ["set istio_install_chart_path to the directory"],
                         istio_install_chart_path="/nonexistent/charts")
    assert msg.startswith("/nonexistent/charts does not exist or is not a readable directory")
    assert result.writes == []


def test_unpacked_chart_of_another_version_is_refused(refuse, charts, tmp_path, flavour):
    # An unpacked base/ folder whose Chart.yaml says another version than the pin.
    for chart in ("base", "istiod"):
        shutil.copytree(charts / "dirs" / chart, tmp_path / chart)
    result, msg = refuse([f"is version {flavour['istio']}, not 1.0.0"], ["istio_install_version"],
                         istio_install_chart_path=str(tmp_path), istio_install_version="1.0.0")
    assert msg.startswith(f"chart base in the local chart directory {tmp_path} ({tmp_path}/base) is version "
                          f"{flavour['istio']}, not 1.0.0")
    assert result.writes == []


def test_chart_version_missing_in_the_mirror(refuse, mirror):
    result, msg = refuse(["cannot get chart base version 1.2.3", 'chart "base" version "1.2.3" not found'],
                         ["set istio_install_version to a version that source serves"],
                         istio_install_chart_path="", istio_install_chart_repo_url=mirror, istio_install_version="1.2.3")
    assert msg == (f"cannot get chart base version 1.2.3 from the chart repository {mirror}: chart \"base\" version "
                   f"\"1.2.3\" not found in {mirror} repository; set istio_install_version to a version that source "
                   "serves, or istio_install_chart_repo_url / istio_install_chart_path to a source that has it")
    assert result.writes == []


def test_unreachable_repository(refuse):
    # Nothing listens on port 9 of 127.0.0.1: the source tried is named with helm's reason.
    _result, msg = refuse(["cannot get chart base version ", "connection refused"],
                          ["istio_install_chart_repo_url / istio_install_chart_path to a source that has it"],
                          istio_install_chart_path="", istio_install_chart_repo_url="http://127.0.0.1:9/charts")
    assert msg.startswith("cannot get chart base version ")
    assert "from the chart repository http://127.0.0.1:9/charts: " in msg
    assert "connection refused" in msg


def test_helm_not_on_the_path(refuse):
    # The virtualenv's python and the system's tools, but not the directory of the built helm.
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    assert subprocess.run(["sh", "-c", "command -v helm"], env={"PATH": path}, check=False).returncode != 0
    result, msg = refuse(["no helm binary on the PATH of localhost ("],
                         ["set istio_install_helm_binary to its full path"], env={"PATH": path})
    assert msg.startswith("no helm binary on the PATH of localhost (")
    assert "set istio_install_helm_binary to its full path" in msg
    assert result.writes == []


def test_manage_false_without_istio(refuse):
    result, msg = refuse(["istio_install_manage is false but no Deployment istiod"],
                         ["install Istio first, or set istio_install_manage: true"], istio_install_manage=False)
    assert msg == ("istio_install_manage is false but no Deployment istiod (label app=istiod) runs in namespace "
                   "istio-system: install Istio first, or set istio_install_manage: true to install it with this role")
    assert result.writes == []


@pytest.fixture
def limited_kubeconfig(cluster, tmp_path):
    """A ServiceAccount that may read everything and write nothing, as a token kubeconfig."""
    manifest = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": LIMITED_SA, "namespace": "default"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": LIMITED_SA},
         "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": LIMITED_SA},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": LIMITED_SA},
         "subjects": [{"kind": "ServiceAccount", "name": LIMITED_SA, "namespace": "default"}]},
    ]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifest))
    token = cluster.kubectl("create", "token", LIMITED_SA, "-n", "default", "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {"apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
              "users": [{"name": LIMITED_SA, "user": {"token": token}}],
              "contexts": [{"name": "limited", "context": {"cluster": admin["clusters"][0]["name"], "user": LIMITED_SA}}],
              "current-context": "limited"}
    path = tmp_path / "limited.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield path
    cluster.kubectl("delete", "-f", "-", "--ignore-not-found", stdin=yaml.safe_dump_all(manifest))


def test_namespace_creation_forbidden_by_rbac(cluster, refuse, limited_kubeconfig):
    position = cluster.audit_position()
    result, msg = refuse(["forbidden (403) to create Namespace istio-system"],
                         ["create the namespace beforehand or grant create on namespaces"],
                         env={"K8S_AUTH_KUBECONFIG": str(limited_kubeconfig), "KUBECONFIG": str(limited_kubeconfig)})
    user = f"system:serviceaccount:default:{LIMITED_SA}"
    assert msg == (f"forbidden (403) to create Namespace istio-system: namespaces is forbidden: User \"{user}\" cannot "
                   "create resource \"namespaces\" in API group \"\" at the cluster scope; create the namespace beforehand "
                   "or grant create on namespaces to the identity running the playbook (see docs/rbac.md)")
    # The refused create is the only write the identity attempted; nothing else was sent.
    attempts = cluster.mutations_since(position, user=user)
    assert [(e["verb"], e["objectRef"]["resource"], e["responseStatus"]["code"]) for e in attempts] == [
        ("create", "namespaces", 403)]
    assert not exists(cluster, "namespace", NAMESPACE)
    assert releases(cluster) == {}


# --- install, rerun, upgrade ------------------------------------------------------------------------

PASSTHROUGH = {"pilot": {"env": {"PILOT_ENABLE_STATUS": "true"}},
               "meshConfig": {"accessLogFile": "/dev/stdout", "outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}}


def test_install_from_a_local_chart_directory(cluster, k8s, run, flavour):
    result = run(istio_install_outbound_traffic_policy="REGISTRY_ONLY", istio_install_istiod_values=PASSTHROUGH)
    assert result.rc == 0, result.output[-3000:]
    version = flavour["istio"]
    found = releases(cluster)
    assert {n: (r["namespace"], r["chart"], r["status"]) for n, r in found.items()} == {
        "istio-base": (NAMESPACE, f"base-{version}", "deployed"),
        "istiod": (NAMESPACE, f"istiod-{version}", "deployed"),
    }
    # The requested values, as helm recorded them: the role's own settings over the passthrough dict.
    assert json.loads(helm(cluster, "get", "values", "istiod", "-n", NAMESPACE, "-o", "json")) == {
        "global": {"istioNamespace": NAMESPACE},
        "meshConfig": {"accessLogFile": "/dev/stdout", "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
        "pilot": {"env": {"PILOT_ENABLE_STATUS": "true"}},
    }
    assert json.loads(helm(cluster, "get", "values", "istio-base", "-n", NAMESPACE, "-o", "json")) == {
        "global": {"istioNamespace": NAMESPACE}}
    # The flavour's real CRDs are served, with that Istio version's API versions.
    assert served(k8s, "networking.istio.io", "virtualservices") == flavour["virtualservices"]
    assert served(k8s, "security.istio.io", "peerauthentications") == flavour["peerauthentications"]
    assert istio_crds(cluster) == upstream_istio_crds(cluster, flavour["istio"])
    # istiod, its injector and its mesh config as the chart rendered them.
    deployment = kubectl_json(cluster, "-n", NAMESPACE, "get", "deployment", "istiod")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"docker.io/istio/pilot:{version}"
    assert deployment["metadata"]["labels"]["istio.io/rev"] == "default"
    assert {c["type"]: c["status"] for c in deployment["status"]["conditions"]}["Available"] == "True"
    webhook = kubectl_json(cluster, "get", "mutatingwebhookconfiguration", "istio-sidecar-injector")
    assert [w["failurePolicy"] for w in webhook["webhooks"]] == ["Ignore"]
    mesh = yaml.safe_load(kubectl_json(cluster, "-n", NAMESPACE, "get", "configmap", "istio")["data"]["mesh"])
    assert mesh["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"}
    assert kubectl_json(cluster, "get", "namespace", NAMESPACE)["metadata"]["labels"][
        "app.kubernetes.io/managed-by"] == "teg.istio"
    # No gateway: neither a gateway chart release nor an Istio gateway Deployment anywhere.
    assert not any(r["chart"].startswith("gateway-") for r in found.values())
    deployments = kubectl_json(cluster, "get", "deployments", "-A", "-l", "istio")["items"]
    assert [d["metadata"]["name"] for d in deployments] == ["istiod"]
    assert (f"Istio {version}: Deployment istio-system/istiod (revision default) available, sidecar injector "
            "istio-sidecar-injector registered") in result.stdout


def test_second_run_changes_nothing_writes_nothing_and_runs_no_helm(run):
    # The releases are read from Helm's Secrets, so with nothing to do no helm process runs: a helm binary
    # that does not exist is never found missing.
    result = run(istio_install_outbound_traffic_policy="REGISTRY_ONLY", istio_install_istiod_values=PASSTHROUGH,
                 istio_install_helm_binary="/nonexistent/bin/helm")
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 0
    assert result.writes == [], result.describe_writes()


def test_check_mode_of_a_value_change_reports_it_and_writes_nothing(cluster, run):
    result = run(check=True)
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 1  # istiod's values differ; base is unchanged
    assert result.writes == [] and result.dry_runs == []
    assert "check mode: would install or upgrade istiod with charts" in result.stdout
    assert releases(cluster)["istiod"]["revision"] == "1"


def test_value_change_upgrades_istiod_only(cluster, run):
    result = run()
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 1
    found = releases(cluster)
    assert (found["istio-base"]["revision"], found["istiod"]["revision"]) == ("1", "2")
    assert json.loads(helm(cluster, "get", "values", "istiod", "-n", NAMESPACE, "-o", "json")) == {
        "global": {"istioNamespace": NAMESPACE}, "meshConfig": {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}}
    again = run()
    assert again.recap()["changed"] == 0
    assert again.writes == [], again.describe_writes()


# --- an Istio this role does not manage --------------------------------------------------------------

@pytest.fixture
def ingress_gateway(cluster):
    manifest = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-ingress"}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "istio-ingressgateway", "namespace": "istio-ingress",
                      "labels": {"app": "istio-ingressgateway", "istio": "ingressgateway"}},
         "spec": {"replicas": 0, "selector": {"matchLabels": {"istio": "ingressgateway"}},
                  "template": {"metadata": {"labels": {"istio": "ingressgateway"}},
                               "spec": {"containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2"}]}}}},
    ]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifest))
    yield
    cluster.kubectl("delete", "namespace", "istio-ingress", "--wait=true")


def test_manage_false_reports_the_running_istio_and_warns_about_a_gateway(run, flavour, ingress_gateway):
    result = run(istio_install_manage=False, istio_install_version="0.0.1", istio_install_chart_path="/nonexistent")
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 0
    assert result.writes == [] and result.dry_runs == []
    assert "[WARNING]: Istio gateway Deployment(s) istio-ingress/istio-ingressgateway found." in result.output
    assert (f"Istio {flavour['istio']}: Deployment istio-system/istiod (revision default, installed by Helm release "
            "istiod in istio-system) available, sidecar injector istio-sidecar-injector registered (namespaces join it "
            "with istio-injection=enabled); used as it is, nothing installed or upgraded: istio_install_manage is "
            "false") in result.stdout


def test_istiod_installed_another_way_is_refused(cluster, refuse, flavour):
    # istiod-canary made with kubectl (as istioctl would), not by Helm release istiod-canary.
    deployment = kubectl_json(cluster, "-n", NAMESPACE, "get", "deployment", "istiod")
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "istiod-canary", "namespace": NAMESPACE,
                             "labels": {"app": "istiod", "istio": "pilot", "istio.io/rev": "canary"}},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": "canary"}},
                         "template": {"metadata": {"labels": {"app": "istiod", "istio.io/rev": "canary"}},
                                      "spec": deployment["spec"]["template"]["spec"]}}}
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    try:
        result, msg = refuse(["Deployment istio-system/istiod-canary", "is not part of Helm release istiod-canary"],
                             ["set istio_install_manage: false", "or remove it first"], istio_install_revision="canary")
        assert msg == (f"Deployment istio-system/istiod-canary (Istio {flavour['istio']}) exists but is not part of Helm "
                       "release istiod-canary (istioctl or operator install?): set istio_install_manage: false to use "
                       "that Istio as it is, or remove it first")
        assert result.writes == []
    finally:
        cluster.kubectl("-n", NAMESPACE, "delete", "deployment", "istiod-canary", "--wait=true")


def _set_release_status(cluster, name, revision, status):
    """Rewrite the status inside Helm's release Secret, as an interrupted helm run leaves it."""
    secret_name = f"sh.helm.release.v1.{name}.v{revision}"
    secret = kubectl_json(cluster, "-n", NAMESPACE, "get", "secret", secret_name)
    release = json.loads(gzip.decompress(base64.b64decode(base64.b64decode(secret["data"]["release"]))))
    release["info"]["status"] = status
    data = base64.b64encode(base64.b64encode(gzip.compress(json.dumps(release).encode()))).decode()
    patch = {"metadata": {"labels": {"status": status}}, "data": {"release": data}}
    cluster.kubectl("-n", NAMESPACE, "patch", "secret", secret_name, "--type=merge", "-p", json.dumps(patch))


def test_release_stuck_in_a_pending_operation_is_refused(cluster, run, refuse):
    _set_release_status(cluster, "istiod", 2, "pending-upgrade")
    try:
        result, msg = refuse(["Helm release istiod in istio-system is pending-upgrade"],
                             ["run `helm rollback istiod -n istio-system`"])
        assert msg == ("Helm release istiod in istio-system is pending-upgrade (an interrupted helm run): run "
                       "`helm rollback istiod -n istio-system` (or `helm uninstall istiod -n istio-system` if it never "
                       "deployed), then run again")
        assert result.writes == []
    finally:
        _set_release_status(cluster, "istiod", 2, "deployed")
    assert run().recap()["changed"] == 0


def _forced(result):
    """How the run forced the istiod chart's objects onto the cluster, per object: "replaced" (PUT, verb update: Helm 3's
    --force, Helm 4's --force-replace) or "force-conflicts" (a server-side apply PATCH with force=true: Helm 4's
    --force-conflicts, for a release it applied server-side, its default)."""
    def how(event):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(event["requestURI"]).query)
        if event["verb"] == "update":
            return "replaced"
        return "force-conflicts" if event["verb"] == "patch" and query.get("force") == ["true"] else None
    return sorted((e["objectRef"]["resource"], e["objectRef"]["name"], how(e)) for e in result.writes
                  if e["objectRef"]["resource"] in ("deployments", "services", "configmaps") and how(e))


def test_release_left_failed_is_upgraded_again_and_forced_only_with_consent(cluster, run):
    # Values and chart equal the request, so only the failed status says the release needs helm again.
    _set_release_status(cluster, "istiod", 2, "failed")
    result = run()
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 1
    history = json.loads(helm(cluster, "history", "istiod", "-n", NAMESPACE, "-o", "json"))
    assert [(h["revision"], h["status"]) for h in history][-1] == (3, "deployed")
    assert _forced(result) == []  # not forced without istio_install_helm_force
    assert run().recap()["changed"] == 0
    _set_release_status(cluster, "istiod", 3, "failed")
    forced = run(istio_install_helm_force=True)
    assert forced.rc == 0, forced.output[-3000:]
    # Helm 4 applied the release server-side, so it is forced with --force-conflicts (it refuses --force-replace with
    # server-side apply); Helm 3 replaces (--force).
    how = "force-conflicts" if _helm_major(cluster) >= 4 else "replaced"
    assert ("deployments", "istiod", how) in _forced(forced)
    assert run().recap()["changed"] == 0


# --- uninstall -------------------------------------------------------------------------------------

def test_uninstall_in_check_mode_predicts_and_writes_nothing(cluster, run, flavour):
    result = run(check=True, istio_install_state="absent", istio_install_remove_crds=True)
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 2  # istiod and base (helm_releases); the CRDs and the namespace (k8s)
    assert result.writes == [], result.describe_writes()
    assert set(releases(cluster)) == {"istio-base", "istiod"}
    assert istio_crds(cluster) == upstream_istio_crds(cluster, flavour["istio"])


def test_uninstall_removes_releases_crds_and_namespace(cluster, k8s, run):
    result = run(istio_install_state="absent", istio_install_remove_crds=True)
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 2  # istiod and base (helm_releases); the CRDs and the namespace (k8s)
    assert releases(cluster) == {}
    assert istio_crds(cluster) == []
    assert served(k8s, "networking.istio.io", "virtualservices") == set()
    assert not exists(cluster, "namespace", NAMESPACE)
    assert not exists(cluster, "mutatingwebhookconfiguration", "istio-sidecar-injector")
    again = run(istio_install_state="absent", istio_install_remove_crds=True)
    assert again.rc == 0, again.output[-3000:]
    assert again.recap()["changed"] == 0
    assert again.writes == [], again.describe_writes()


# --- a mirror and a revision -----------------------------------------------------------------------

def test_revision_installed_from_a_mirror(cluster, run, mirror, flavour, tmp_path):
    variables = {"istio_install_chart_path": "", "istio_install_chart_repo_url": mirror,
                 "istio_install_revision": "canary"}
    # A temporary directory of this run's own (TMPDIR), since the other flavour's lane may use the shared one
    # at the same moment. helm reads the charts from the repository (`helm show chart`) and installs from it
    # (`--repo`): nothing is downloaded into a directory the role would have to clean up, and the values
    # files helm got are gone again.
    result = run(env={"TMPDIR": str(tmp_path)}, **variables)
    assert result.rc == 0, result.output[-3000:]
    # Only kubernetes.core's discovery cache (k8srcp-<digest>.json) stays, as it does for every module of it.
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("k8srcp-")] == []
    found = releases(cluster)
    assert {n: r["chart"] for n, r in found.items()} == {
        "istio-base": f"base-{flavour['istio']}", "istiod-canary": f"istiod-{flavour['istio']}"}
    assert json.loads(helm(cluster, "get", "values", "istiod-canary", "-n", NAMESPACE, "-o", "json"))[
        "revision"] == "canary"
    deployment = kubectl_json(cluster, "-n", NAMESPACE, "get", "deployment", "istiod-canary")
    assert deployment["metadata"]["labels"]["istio.io/rev"] == "canary"
    assert exists(cluster, "mutatingwebhookconfiguration", "istio-sidecar-injector-canary")
    assert (f"Istio {flavour['istio']}: Deployment istio-system/istiod-canary (revision canary) available, sidecar "
            "injector istio-sidecar-injector-canary registered") in result.stdout
    again = run(**variables)
    assert again.recap()["changed"] == 0
    assert again.writes == [], again.describe_writes()
    removed = run(istio_install_state="absent", istio_install_revision="canary", istio_install_remove_crds=True)
    assert removed.rc == 0, removed.output[-3000:]
    assert releases(cluster) == {} and istio_crds(cluster) == []


def test_mirror_with_basic_authentication(cluster, run, refuse, private_mirror):
    # Istio is gone again (previous test): check mode shows the charts were fetched with the credentials.
    user, password = MIRROR_CREDENTIALS
    variables = {"istio_install_chart_path": "", "istio_install_chart_repo_url": private_mirror,
                 "istio_install_chart_repo_username": user}
    result = run(check=True, istio_install_chart_repo_password=password, **variables)
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 1
    assert result.writes == []
    assert password not in result.output
    refused, msg = refuse(["cannot get chart base version ", "401 Unauthorized"],
                          ["istio_install_chart_repo_url / istio_install_chart_path to a source that has it"],
                          check=True, istio_install_chart_repo_password="wrong", **variables)
    assert msg.startswith("cannot get chart base version ")
    assert f"from the chart repository {private_mirror}: " in msg and "401 Unauthorized" in msg
    assert refused.writes == []


# --- ambient mode (the current flavour only: ambient needs Istio >= 1.24) ---------------------------

AMBIENT = {"istio_install_mesh_mode": "ambient"}
# Passthrough values for the ambient charts: a pod annotation each (which the stand-ins render, as the real charts
# do), and a key the role sets itself (which the role's setting wins over).
OWNER = {"example.com/owner": "mesh-team"}
AMBIENT_PASSTHROUGH = {"istio_install_cni_values": {"podAnnotations": OWNER, "profile": "demo"},
                       "istio_install_ztunnel_values": {"podAnnotations": OWNER, "istioNamespace": "elsewhere"}}


@pytest.fixture
def current_only(cluster):
    if cluster.matrix != "current":
        pytest.skip("ambient needs Istio >= 1.24; the legacy flavour only shows the refusal (test_bad_input.py)")


def test_ambient_refuses_a_ztunnel_it_does_not_own_before_any_write(cluster, refuse, current_only):
    # Another ambient install's ztunnel (no Helm release of this role): two on a node would fight over the traffic.
    cluster.kubectl("create", "namespace", "other-mesh")
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ztunnel", "namespace": "other-mesh"},
        "spec": {"selector": {"matchLabels": {"app": "ztunnel"}}, "template": {
            "metadata": {"labels": {"app": "ztunnel"}},
            "spec": {"containers": [{"name": "istio-proxy", "image": "docker.io/istio/ztunnel:1.29.6"}]}}}}))
    try:
        result, msg = refuse(["DaemonSet other-mesh/ztunnel (not installed by Helm) already runs and is not part of "
                              "release istio-cni / ztunnel in istio-system"],
                             ["remove it (or the Istio ambient install it belongs to) first, or set "
                              "istio_install_manage: false"], **AMBIENT)
        assert result.writes == [], result.describe_writes()
        assert releases(cluster) == {}
    finally:
        cluster.kubectl("-n", "other-mesh", "delete", "daemonset", "ztunnel", "--wait=true")
        cluster.kubectl("delete", "namespace", "other-mesh", "--wait=false")


def test_ambient_installs_cni_and_ztunnel_after_istiod_and_a_rerun_writes_nothing(cluster, run, flavour, current_only):
    checked = run(check=True, **AMBIENT)
    assert checked.rc == 0, checked.output[-3000:]
    assert checked.writes == [], checked.describe_writes()
    assert "would create namespace istio-system, install or upgrade istio-base and istiod and istio-cni and ztunnel" \
        in checked.stdout
    result = run(**AMBIENT, **AMBIENT_PASSTHROUGH)
    assert result.rc == 0, result.output[-3000:]
    version = flavour["istio"]
    found = releases(cluster)
    assert {n: (r["chart"], r["status"]) for n, r in found.items()} == {
        "istio-base": (f"base-{version}", "deployed"), "istiod": (f"istiod-{version}", "deployed"),
        "istio-cni": (f"cni-{version}", "deployed"), "ztunnel": (f"ztunnel-{version}", "deployed")}
    # Istio's order (its Helm page for ambient): base, istiod, then cni and ztunnel; helm's release records tell it.
    installed = [e["objectRef"]["name"] for e in result.writes
                 if e["objectRef"]["resource"] == "secrets" and e["verb"] == "create"]
    order = [next(r for r in ("istio-base", "istiod", "istio-cni", "ztunnel") if n.startswith(f"sh.helm.release.v1.{r}.v"))
             for n in installed if n.startswith("sh.helm.release.v1.")]
    assert order == ["istio-base", "istiod", "istio-cni", "ztunnel"], installed
    assert json.loads(helm(cluster, "get", "values", "istiod", "-n", NAMESPACE, "-o", "json"))["profile"] == "ambient"
    # The passthrough values under the role's own settings, which win.
    assert json.loads(helm(cluster, "get", "values", "istio-cni", "-n", NAMESPACE, "-o", "json")) == {
        "profile": "ambient", "podAnnotations": OWNER}
    assert json.loads(helm(cluster, "get", "values", "ztunnel", "-n", NAMESPACE, "-o", "json")) == {
        "istioNamespace": NAMESPACE, "podAnnotations": OWNER}
    # What the role's settings render: ambient on in the CNI agent, ztunnel pointed at this namespace's istiod.
    wanted_env = {"istio-cni-node": ("AMBIENT_ENABLED", "true"), "ztunnel": ("XDS_ADDRESS", f"istiod.{NAMESPACE}.svc:15012")}
    for name, (variable, value) in wanted_env.items():
        daemonset = kubectl_json(cluster, "-n", NAMESPACE, "get", "daemonset", name)
        assert daemonset["status"]["numberReady"] >= 1
        pod = daemonset["spec"]["template"]
        assert pod["metadata"]["annotations"]["example.com/owner"] == "mesh-team", name
        assert {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}[variable] == value, name
    assert "ambient: DaemonSets istio-cni-node and ztunnel ready" in result.stdout
    again = run(istio_install_helm_binary="/nonexistent/bin/helm", **AMBIENT, **AMBIENT_PASSTHROUGH)
    assert again.rc == 0, again.output[-3000:]
    assert again.recap()["changed"] == 0
    assert again.writes == [], again.describe_writes()


def test_sidecar_mode_after_ambient_uninstalls_ztunnel_and_cni(cluster, run, current_only):
    checked = run(check=True)
    assert checked.rc == 0, checked.output[-3000:]
    assert checked.writes == [], checked.describe_writes()
    assert "would uninstall ztunnel and istio-cni (sidecar mode), install or upgrade istiod" in checked.stdout
    assert set(releases(cluster)) == {"istio-base", "istiod", "istio-cni", "ztunnel"}
    result = run()
    assert result.rc == 0, result.output[-3000:]
    assert set(releases(cluster)) == {"istio-base", "istiod"}
    assert "profile" not in json.loads(helm(cluster, "get", "values", "istiod", "-n", NAMESPACE, "-o", "json"))
    assert not exists(cluster, "-n", NAMESPACE, "daemonset", "ztunnel")
    assert not exists(cluster, "-n", NAMESPACE, "daemonset", "istio-cni-node")
    again = run()
    assert again.recap()["changed"] == 0 and again.writes == [], again.describe_writes()
    removed = run(istio_install_state="absent", istio_install_remove_crds=True)
    assert removed.rc == 0, removed.output[-3000:]
    assert releases(cluster) == {} and istio_crds(cluster) == []
