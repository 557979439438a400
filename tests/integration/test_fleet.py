"""Many clusters in one run (README.md, "Many clusters"): three local control planes, each in its own state
directory with its own free ports, are the hosts of one inventory group; site.yml runs on the group, each
host's kubeconfig given only as the host variable teg_istio_kubeconfig (the process's KUBECONFIG and
K8S_AUTH_KUBECONFIG name a file that does not exist, so a Kubernetes call or helm that missed the host
variable fails). Each cluster's own audit log is the witness:

- the first run converges all three (writes on each, verify passes on each, the summary says changed);
- a second run writes nothing on any, and the summary says converged for each;
- with one cluster's API server stopped (and another reset to the TEG fixture), the other two converge,
  the run exits non-zero and the summary names the stopped one with the one-line reason, which names the
  host variable to check (teg_istio_host), not K8S_AUTH_*;
- with one cluster's API server killed mid-run (after its first write), the others finish and the killed one fails
  alone, named in the summary; a rerun converges it;
- teardown.yml on the group takes each cluster out of the mesh.

One host (west) reaches its cluster through teg_istio_context in a kubeconfig whose current context is
another cluster's (east), so a call or helm that missed the context would write into east. Another (north) has
no kubeconfig at all: teg_istio_host, teg_istio_api_key and teg_istio_ca_cert, the token a ServiceAccount's
bound only to the ClusterRoles of rbac/ (as docs/awx.md's "a token per host" gives it), so its writes are that
ServiceAccount's in its audit log.

Teardown runs in batches (teg_istio_serial [1, "100%"]): the canary cluster's every task comes before the
first task of the others in the run's output.

The inventory mixes both flavours (docs/local-control-plane.md, "Flavours"): east and west are of the lane's
flavour ($MATRIX), north of the other one, so the current lane runs one legacy cluster beside two current ones.
Both flavours being in one fleet, the legacy lane does not run this module (three more clusters for nothing new).
Each cluster's audit log shows that every role discovered the API versions of its own cluster: each object was
written under the group and version its flavour serves (API below), never under another cluster's. The site
variables are the inventory's group variables, and each host has its own Istio charts and version
(istio_install_chart_path, istio_install_version), as a fleet of mixed Istio versions would.

The tests of this module depend on each other's order (pytest runs them top to bottom)."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import faults
from conftest import MATRIX, REPO, SITE_VARS, Cluster, PlaybookRun

# One fleet of both flavours is enough (the docstring): the current lane's.
pytestmark = pytest.mark.skipif(MATRIX != "current", reason="the current lane's fleet has clusters of both flavours")

NAMES = ("east", "west", "north")
GROUP = "teg_fleet"
OTHER_FLAVOUR = {"current": "legacy", "legacy": "current"}[MATRIX]
FLAVOURS = {"east": MATRIX, "west": MATRIX, "north": OTHER_FLAVOUR}
# Where each flavour serves what site.yml writes (tests/integration/test_site.py checks the same on one cluster):
# resource -> "group/version" in the audit log's objectRef.
API = {
    "current": {"gateways": "gateway.networking.k8s.io/v1", "httproutes": "gateway.networking.k8s.io/v1",
                "envoyproxies": "gateway.envoyproxy.io/v1alpha1", "virtualservices": "networking.istio.io/v1",
                "peerauthentications": "security.istio.io/v1"},
    "legacy": {"gateways": "gateway.networking.k8s.io/v1beta1", "httproutes": "gateway.networking.k8s.io/v1beta1",
               "envoyproxies": "config.gateway.envoyproxy.io/v1alpha1", "virtualservices": "networking.istio.io/v1beta1",
               "peerauthentications": "security.istio.io/v1beta1"},
}
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    clusters = {}
    for name in NAMES:
        state_dir = tmp_path_factory.mktemp(f"fleet-{name}")
        clusters[name] = Cluster(state_dir=state_dir, matrix=FLAVOURS[name],
                                 env=dict(os.environ, LOCALCP_DIR=str(state_dir)))

    def up(cluster):
        return cluster.localcp("up", "--matrix", cluster.matrix)

    try:
        with ThreadPoolExecutor(len(clusters)) as pool:
            list(pool.map(up, clusters.values()))
        for cluster in clusters.values():
            for line in cluster.localcp("env").stdout.splitlines():
                key, value = line.removeprefix("export ").split("=", 1)
                cluster.env[key] = value.replace("$PATH", os.environ["PATH"])
        yield clusters
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"cluster-up failed:\n{exc.stderr}", pytrace=False)
    finally:
        for cluster in clusters.values():
            cluster.localcp("down")


# north's identity: the ServiceAccount of rbac/binding-example.yml, bound to rbac/clusterrole.yml (test_awx.py).
RBAC = REPO / "rbac"
SA_USER = "system:serviceaccount:teg-istio-automation:teg-istio"


@pytest.fixture(scope="module")
def north_token(fleet):
    """teg_istio_host, teg_istio_api_key and teg_istio_ca_cert of a ServiceAccount on north bound only to the
    ClusterRoles of rbac/ (north is never reset, so they outlive the module's tests)."""
    north = fleet["north"]
    north.kubectl("apply", "-f", str(RBAC / "clusterrole.yml"), "-f", str(RBAC / "binding-example.yml"))
    token = north.kubectl("create", "token", "teg-istio", "-n", "teg-istio-automation", "--duration=2h").stdout.strip()
    config = json.loads(north.kubectl("config", "view", "--raw", "-o", "json").stdout)["clusters"][0]["cluster"]
    return {"teg_istio_host": config["server"], "teg_istio_api_key": token,
            "teg_istio_ca_cert": config["certificate-authority"]}


@pytest.fixture(scope="module")
def inventory(fleet, north_token, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet-inventory")
    hosts = {name: {"teg_istio_kubeconfig": str(cluster.kubeconfig)} for name, cluster in fleet.items()}
    hosts["north"] = dict(north_token)
    # west through a context of a kubeconfig whose current context is east's: a call (or helm) that missed
    # teg_istio_context would write west's objects into east.
    merged = folder / "merged.kubeconfig"
    merged.write_text(yaml.safe_dump(merged_kubeconfig(fleet, current="east")))
    hosts["west"] = {"teg_istio_kubeconfig": str(merged), "teg_istio_context": "west"}
    # The site variables as group variables (extra vars would override every host's), and each host's own
    # charts and Istio version where site-vars.yml reads them from the process environment.
    group_vars = dict(yaml.safe_load(SITE_VARS.read_text()), ansible_python_interpreter=sys.executable)
    for name, cluster in fleet.items():
        hosts[name].update(istio_install_chart_path=cluster.env["TEG_ISTIO_TEST_CHARTS"],
                           istio_install_version=cluster.env["TEG_ISTIO_TEST_ISTIO_VERSION"])
    path = folder / "clusters.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {GROUP: {"hosts": hosts, "vars": group_vars}}}}))
    return path


def merged_kubeconfig(fleet, current):
    """One kubeconfig with a context per cluster, named after it."""
    doc = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [], "current-context": current}
    for name, cluster in fleet.items():
        own = yaml.safe_load(cluster.kubeconfig.read_text())
        doc["clusters"].append(dict(own["clusters"][0], name=name))
        doc["users"].append(dict(own["users"][0], name=name))
        doc["contexts"].append({"name": name, "context": {"cluster": name, "user": name}})
    return doc


def site_command(fleet, inventory, tmp_path, playbook="site.yml", extra_vars=None):
    """(command line, environment) of `playbook` on the group."""
    nowhere = str(tmp_path / "no-such-kubeconfig")
    env = dict(next(iter(fleet.values())).env, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               KUBECONFIG=nowhere, K8S_AUTH_KUBECONFIG=nowhere)
    # No TEG_ISTIO_TEST_* in the process: each host's charts and Istio version come from the inventory only.
    for variable in ("TEG_ISTIO_TEST_CHARTS", "TEG_ISTIO_TEST_ISTIO_VERSION"):
        env.pop(variable, None)
    cmd = [str(ANSIBLE_PLAYBOOK), str(REPO / "playbooks" / playbook), "-i", str(inventory),
           "-e", json.dumps(dict(extra_vars or {}, teg_istio_clusters=GROUP))]
    return cmd, env


def run_site(fleet, inventory, tmp_path, playbook="site.yml", extra_vars=None):
    """site.yml on the group; {cluster name: its PlaybookRun (the output is the run's, the events its own)}."""
    cmd, env = site_command(fleet, inventory, tmp_path, playbook, extra_vars)
    positions = {name: cluster.audit_position() for name, cluster in fleet.items()}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    time.sleep(0.2)  # the audit backend is blocking, this only lets the file system settle
    return proc, {name: PlaybookRun(proc.returncode, proc.stdout, proc.stderr,
                                    cluster.mutations_since(positions[name]))
                  for name, cluster in fleet.items()}


def summary(stdout):
    """{host: the rest of its line} from the CLUSTERS block after the PLAY RECAP."""
    lines = stdout.split("CLUSTERS", 1)[1].splitlines()[1:] if "CLUSTERS" in stdout else []
    out = {}
    for line in lines:
        host, sep, rest = line.partition(": ")
        if sep and host in NAMES:
            out[host] = rest
    return out


def changed_every_cluster(fleet, inventory, tmp_path, playbook, record=None, extra_vars=None):
    """Run `playbook` on the group, expect success, a write on each cluster and `changed` for each in the
    summary; the injection label of each cluster's TEG namespace. `record` (a dict) gets the run's output
    and each cluster's run."""
    proc, runs = run_site(fleet, inventory, tmp_path, playbook, extra_vars)
    if record is not None:
        record.update(runs, output=proc.stdout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for name in NAMES:
        assert runs[name].writes, f"{name}: no write in its audit log"
    assert summary(proc.stdout) == {name: "changed" for name in NAMES}, proc.stdout[-2000:]
    return {name: json.loads(cluster.kubectl("get", "namespace", "envoy-gateway-system", "-o", "json").stdout)
            ["metadata"].get("labels", {}).get("istio-injection") for name, cluster in fleet.items()}


FIRST_RUN = {}


def written_api_versions(run):
    """{resource: {"group/version", ...}} of the writes of a run in one cluster's audit log, for the resources
    whose API differs between the flavours."""
    out = {}
    for event in run.writes:
        ref = event.get("objectRef", {})
        if ref.get("resource") in API["current"]:
            out.setdefault(ref["resource"], set()).add(f"{ref.get('apiGroup')}/{ref.get('apiVersion')}")
    return out


def test_first_run_converges_every_cluster(fleet, inventory, tmp_path):
    assert changed_every_cluster(fleet, inventory, tmp_path, "site.yml", FIRST_RUN) == {name: "enabled" for name in NAMES}


def test_each_cluster_got_the_api_versions_of_its_own_flavour(fleet):
    """Version discovery per cluster: in one run, each cluster's objects were written under the API versions its
    own flavour serves, and each cluster's objects read back under them."""
    assert {name: cluster.matrix for name, cluster in fleet.items()} == FLAVOURS
    assert set(FLAVOURS.values()) == {"current", "legacy"}
    for name, cluster in fleet.items():
        expected = API[cluster.matrix]
        assert written_api_versions(FIRST_RUN[name]) == {resource: {api} for resource, api in expected.items()}, name
        route = json.loads(cluster.kubectl("get", "httproutes.gateway.networking.k8s.io", "httpbin", "-n", "httpbin",
                                           "-o", "json").stdout)
        assert route["apiVersion"] == expected["httproutes"], name
        ref = json.loads(cluster.kubectl("get", "gatewayclasses.gateway.networking.k8s.io", "teg", "-o", "json")
                         .stdout)["spec"]["parametersRef"]
        assert ref["group"] == expected["envoyproxies"].split("/")[0], name


def test_the_token_host_wrote_as_its_service_account_only(fleet):
    """north's writes came through teg_istio_host and teg_istio_api_key: every one of them is the ServiceAccount's
    (kubectl's admin identity, the kubeconfig's, wrote nothing there during the run), helm's release records
    included."""
    writes = FIRST_RUN["north"].writes
    assert writes and {e["user"]["username"] for e in writes} == {SA_USER}, \
        sorted({e["user"]["username"] for e in writes})
    assert any(e["objectRef"].get("resource") == "secrets" and e["objectRef"].get("namespace") == "istio-system"
               for e in writes), "no Helm release record written on north"


def test_second_run_writes_nothing_on_any_cluster(fleet, inventory, tmp_path):
    proc, runs = run_site(fleet, inventory, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for name in NAMES:
        assert runs[name].writes == [], (name, runs[name].describe_writes())
    assert summary(proc.stdout) == {name: "converged" for name in NAMES}, proc.stdout[-2000:]


def test_validate_certs_reaches_every_call_of_its_host(fleet, inventory, tmp_path):
    """north without its CA file: teg_istio_validate_certs false lets every call of site.yml (a run with nothing
    to do: each role's plan, verify) through unverified; left at its default the same host is refused in one
    line, because the API server's certificate is then checked and no CA signs it."""
    doc = yaml.safe_load(inventory.read_text())
    north = doc["all"]["children"][GROUP]["hosts"]["north"]
    north.pop("teg_istio_ca_cert")
    for validate, outcome in ((False, "converged"), (None, "refused: ")):
        if validate is None:
            north.pop("teg_istio_validate_certs")
        else:
            north["teg_istio_validate_certs"] = validate
        path = tmp_path / "insecure-{}.yml".format(validate)
        path.write_text(yaml.safe_dump(doc))
        proc, runs = run_site(fleet, path, tmp_path)
        assert runs["north"].writes == [], runs["north"].describe_writes()
        line = summary(proc.stdout)["north"]
        assert line.startswith(outcome), proc.stdout[-4000:]
        if validate is None:
            assert proc.returncode != 0 and "certificate" in line.lower() and "\n" not in line, line


def test_a_stopped_cluster_fails_alone_and_is_named(fleet, inventory, tmp_path):
    fleet["east"].localcp("reset")
    fleet["north"].localcp("stop-apiserver")
    try:
        proc, runs = run_site(fleet, inventory, tmp_path)
    finally:
        fleet["north"].localcp("start-apiserver")
    assert proc.returncode != 0, proc.stdout[-4000:]
    outcome = summary(proc.stdout)
    assert outcome["east"] == "changed" and runs["east"].writes, proc.stdout[-4000:]
    assert outcome["west"] == "converged" and runs["west"].writes == [], proc.stdout[-4000:]
    assert outcome["north"].startswith("refused: "), proc.stdout[-4000:]
    assert "cannot reach the Kubernetes API server" in outcome["north"], outcome["north"]
    # The fix names the inventory variable that set north's connection, not the process's K8S_AUTH_*.
    server = yaml.safe_load(fleet["north"].kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    assert (f"check teg_istio_host ({server}) and that the API server is running" in outcome["north"]
            and "K8S_AUTH" not in outcome["north"]), outcome["north"]
    ns = json.loads(fleet["east"].kubectl("get", "namespace", "envoy-gateway-system", "-o", "json").stdout)
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"


def test_a_cluster_whose_api_server_dies_mid_run_fails_alone_and_a_rerun_converges_it(fleet, inventory, tmp_path):
    """east and west reset to the TEG fixture, then site.yml on the group with west's API server killed right after
    west's first write (faults.WriteGate on west): east converges (changed) and north stays converged while west
    fails alone, named in the summary with the one-line reason; a rerun converges west (changed) and writes nothing
    on the other two."""
    for name in ("east", "west"):
        fleet[name].localcp("reset")
    cmd, env = site_command(fleet, inventory, tmp_path)
    positions = {name: cluster.audit_position() for name, cluster in fleet.items() if name != "west"}
    rc, stdout, stderr, cut_at, admitted = faults.cut_off(
        fleet["west"], cmd, env, REPO, lambda request, admitted: any(not a.endswith("/teg-istio-run") for a in admitted))
    outcome = summary(stdout)
    runs = {name: PlaybookRun(rc, stdout, stderr, fleet[name].mutations_since(position))
            for name, position in positions.items()}
    assert rc != 0, stdout[-4000:]
    assert outcome["east"] == "changed" and runs["east"].writes, stdout[-4000:]
    assert outcome["north"] == "converged" and runs["north"].writes == [], runs["north"].describe_writes()
    assert outcome["west"].startswith("refused: "), (outcome, stderr[-2000:])
    assert "cannot reach the Kubernetes API server" in outcome["west"] and "\n" not in outcome["west"], outcome["west"]
    assert verify_passes(fleet["east"]) and not verify_passes(fleet["west"]), (cut_at, admitted)

    proc, runs = run_site(fleet, inventory, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert summary(proc.stdout) == {"east": "converged", "west": "changed", "north": "converged"}, proc.stdout[-2000:]
    assert runs["west"].writes and runs["east"].writes == [] and runs["north"].writes == [], \
        {name: run.describe_writes() for name, run in runs.items()}


def verify_passes(cluster):
    """verify.yml against one cluster of the fleet with the site variables: whether it passed."""
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), str(REPO / "playbooks" / "verify.yml"), "-e", f"@{SITE_VARS}"],
                          cwd=REPO, env=dict(cluster.env, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")),
                          capture_output=True, text=True, check=False)
    return proc.returncode == 0


def test_teardown_runs_on_every_cluster_a_canary_batch_first(fleet, inventory, tmp_path):
    """teardown.yml with teg_istio_serial [1, "100%"]: the play runs once per batch, the first with the canary
    alone (the inventory's first host, east), and every task of the canary comes before any of the others."""
    teardown = {}
    labels = changed_every_cluster(fleet, inventory, tmp_path, "teardown.yml", teardown,
                                   extra_vars={"teg_istio_serial": [1, "100%"]})
    assert labels == {name: None for name in NAMES}
    lines = teardown["output"].split("PLAY RECAP", 1)[0].splitlines()
    plays = [i for i, line in enumerate(lines) if line.startswith("PLAY [")]
    assert len(plays) == 2, "expected one play per batch:\n" + "\n".join(lines[i] for i in plays)
    hosts_of_batch = [{name for name in NAMES for line in lines[start:end] if f"[{name}]" in line}
                      for start, end in zip(plays, plays[1:] + [len(lines)])]
    assert hosts_of_batch == [{"east"}, {"west", "north"}], hosts_of_batch
