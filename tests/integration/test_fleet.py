"""Many clusters in one run (README.md, "Many clusters"): three local control planes, each in its own state
directory with its own free ports, are the hosts of one inventory group; site.yml runs on the group, each
host's kubeconfig given only as the host variable teg_istio_kubeconfig (the process's KUBECONFIG and
K8S_AUTH_KUBECONFIG name a file that does not exist, so a Kubernetes call or helm that missed the host
variable fails). Each cluster's own audit log is the witness:

- the first run converges all three (writes on each, verify passes on each, the summary says changed);
- a second run writes nothing on any, and the summary says converged for each;
- with one cluster's API server stopped (and another reset to the TEG fixture), the other two converge,
  the run exits non-zero and the summary names the stopped one with the one-line reason;
- teardown.yml on the group takes each cluster out of the mesh.

One host (west) reaches its cluster through teg_istio_context in a kubeconfig whose current context is
another cluster's (east), so a call or helm that missed the context would write into east.

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

from conftest import MATRIX, REPO, SITE_VARS, Cluster, PlaybookRun

NAMES = ("east", "west", "north")
GROUP = "teg_fleet"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    clusters = {}
    for name in NAMES:
        state_dir = tmp_path_factory.mktemp(f"fleet-{name}")
        clusters[name] = Cluster(state_dir=state_dir, matrix=MATRIX, env=dict(os.environ, LOCALCP_DIR=str(state_dir)))

    def up(cluster):
        return cluster.localcp("up", "--matrix", MATRIX)

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


@pytest.fixture(scope="module")
def inventory(fleet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet-inventory")
    hosts = {name: {"teg_istio_kubeconfig": str(cluster.kubeconfig)} for name, cluster in fleet.items()}
    # west through a context of a kubeconfig whose current context is east's: a call (or helm) that missed
    # teg_istio_context would write west's objects into east.
    merged = folder / "merged.kubeconfig"
    merged.write_text(yaml.safe_dump(merged_kubeconfig(fleet, current="east")))
    hosts["west"] = {"teg_istio_kubeconfig": str(merged), "teg_istio_context": "west"}
    path = folder / "clusters.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {GROUP: {
        "hosts": hosts, "vars": {"ansible_python_interpreter": sys.executable}}}}}))
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


def run_site(fleet, inventory, tmp_path, playbook="site.yml"):
    """site.yml on the group; {cluster name: its PlaybookRun (the output is the run's, the events its own)}."""
    nowhere = str(tmp_path / "no-such-kubeconfig")
    env = dict(next(iter(fleet.values())).env, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               KUBECONFIG=nowhere, K8S_AUTH_KUBECONFIG=nowhere)
    cmd = [str(ANSIBLE_PLAYBOOK), str(REPO / "playbooks" / playbook), "-i", str(inventory),
           "-e", f"@{SITE_VARS}", "-e", json.dumps({"teg_istio_clusters": GROUP})]
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


def changed_every_cluster(fleet, inventory, tmp_path, playbook):
    """Run `playbook` on the group, expect success, a write on each cluster and `changed` for each in the
    summary; the injection label of each cluster's TEG namespace."""
    proc, runs = run_site(fleet, inventory, tmp_path, playbook)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for name in NAMES:
        assert runs[name].writes, f"{name}: no write in its audit log"
    assert summary(proc.stdout) == {name: "changed" for name in NAMES}, proc.stdout[-2000:]
    return {name: json.loads(cluster.kubectl("get", "namespace", "envoy-gateway-system", "-o", "json").stdout)
            ["metadata"].get("labels", {}).get("istio-injection") for name, cluster in fleet.items()}


def test_first_run_converges_every_cluster(fleet, inventory, tmp_path):
    assert changed_every_cluster(fleet, inventory, tmp_path, "site.yml") == {name: "enabled" for name in NAMES}


def test_second_run_writes_nothing_on_any_cluster(fleet, inventory, tmp_path):
    proc, runs = run_site(fleet, inventory, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for name in NAMES:
        assert runs[name].writes == [], (name, runs[name].describe_writes())
    assert summary(proc.stdout) == {name: "converged" for name in NAMES}, proc.stdout[-2000:]


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
    ns = json.loads(fleet["east"].kubectl("get", "namespace", "envoy-gateway-system", "-o", "json").stdout)
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"


def test_teardown_runs_on_every_cluster(fleet, inventory, tmp_path):
    assert changed_every_cluster(fleet, inventory, tmp_path, "teardown.yml") == {name: None for name in NAMES}
