"""Integration-test harness: one real local control plane per test session (flavour from $MATRIX).

Fixtures:
    cluster   the running cluster (state dir, kubeconfig, flavour); started fresh for the session
              in its own LOCALCP_DIR, stopped at the end
    k8s       a kubernetes DynamicClient on the admin kubeconfig
    play      run a playbook of this repository: play("site.yml", extra_vars={...}, check=True)
    reset     put the cluster back to the TEG fixture (as after cluster-up) between scenarios

A PlaybookRun carries rc, the output, and `mutations`: the mutating requests the API server's audit
log recorded while the playbook ran (dry-run requests kept apart), which is the witness for
"a second run writes nothing" and "check mode writes nothing".
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LOCALCP = REPO / "tests" / "localcp" / "localcp.py"
MATRIX = os.environ.get("MATRIX", "current")
SITE_VARS = REPO / "tests" / "localcp" / "site-vars.yml"
# The cluster's own writers (controllers, scheduler, kwok, the API server itself); every other identity's
# mutating requests are what a playbook did.
CONTROLLER_USERS = ("system:kube-controller-manager", "system:kube-scheduler", "kwok-controller", "system:apiserver")
CONTROLLER_PREFIXES = ("system:serviceaccount:kube-system:", "system:node:")
MUTATING_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


@dataclass
class Cluster:
    state_dir: Path
    matrix: str
    env: dict = field(default_factory=dict)

    @property
    def kubeconfig(self):
        return self.state_dir / "kubeconfig"

    @property
    def audit_log(self):
        return self.state_dir / "audit.log"

    def localcp(self, *args):
        return subprocess.run([sys.executable, str(LOCALCP), *args], env=self.env, check=True,
                              capture_output=True, text=True)

    def kubectl(self, *args, check=True, stdin=None):
        return subprocess.run(["kubectl", *args], env=self.env, check=check, capture_output=True,
                              text=True, input=stdin)

    def audit_position(self):
        """The byte offset just past the last complete line of the audit log: the API server may be
        half-way through writing an event (seen in CI: mutations_since then started mid-line)."""
        if not self.audit_log.exists():
            return 0
        with open(self.audit_log, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - 65536))
            tail = fh.read()
        return size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0

    def mutations_since(self, position, user=None):
        """Mutating audit events after byte `position` of the audit log, except the cluster's own; only
        those of `user` when given."""
        events = []
        with open(self.audit_log, "rb") as fh:
            fh.seek(position)
            for line in fh:
                event = json.loads(line)
                username = event["user"].get("username", "")
                if (event.get("verb") not in MUTATING_VERBS or username in CONTROLLER_USERS
                        or username.startswith(CONTROLLER_PREFIXES) or (user and username != user)):
                    continue
                events.append(event)
        return events


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    events: list

    @property
    def output(self):
        return self.stdout + self.stderr

    @property
    def writes(self):
        """Mutating requests that were not dry runs."""
        return [e for e in self.events if "dryRun=All" not in e.get("requestURI", "")]

    @property
    def dry_runs(self):
        return [e for e in self.events if "dryRun=All" in e.get("requestURI", "")]

    def describe_writes(self):
        return [f"{e['verb']} {e['requestURI']}" for e in self.writes]

    def recap(self):
        """The PLAY RECAP counters of localhost, e.g. {'ok': 12, 'changed': 0, 'failed': 0}."""
        for line in self.stdout.splitlines():
            if line.startswith("localhost") and "ok=" in line:
                return {k: int(v) for k, v in (part.split("=") for part in line.split()[2:])}
        raise AssertionError("no PLAY RECAP in the output:\n" + self.output[-3000:])


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp(f"localcp-{MATRIX}")
    env = dict(os.environ, LOCALCP_DIR=str(state_dir))
    c = Cluster(state_dir=state_dir, matrix=MATRIX, env=env)
    try:
        c.localcp("up", "--matrix", MATRIX)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"cluster-up failed:\n{exc.stderr}", pytrace=False)
    for line in c.localcp("env").stdout.splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        c.env[key] = value.replace("$PATH", os.environ["PATH"])
    c.env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    c.env["K8S_AUTH_KUBECONFIG"] = str(c.kubeconfig)
    yield c
    c.localcp("down")


@pytest.fixture(scope="session")
def k8s(cluster):
    from kubernetes import config, dynamic
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    return dynamic.DynamicClient(api)


def _run_playbook(cluster, playbook, extra_vars=None, check=False, diff=False, args=(), use_site_vars=True,
                  env=None):
    path = Path(playbook)
    if not path.is_absolute():
        path = REPO / "playbooks" / playbook
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(path)]
    if use_site_vars:
        cmd += ["-e", f"@{SITE_VARS}"]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    cmd += list(args)
    position = cluster.audit_position()
    proc = subprocess.run(cmd, cwd=REPO, env=dict(cluster.env, **(env or {})), capture_output=True, text=True,
                          check=False)
    time.sleep(0.2)  # the audit backend is blocking, this only lets the file system settle
    return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, cluster.mutations_since(position))


@pytest.fixture(scope="session")
def play(cluster):
    def run(playbook, **kwargs):
        return _run_playbook(cluster, playbook, **kwargs)
    return run


class RolePlaybook:
    """A role's test playbook run without the site vars: `run` returns the PlaybookRun; `fail` expects a
    failure and returns (run, the failed task's msg, asserted to be one line), read from the json callback."""

    def __init__(self, play, playbook):
        self.play, self.playbook = play, playbook

    def run(self, extra_vars=None, **kwargs):
        return self.play(self.playbook, extra_vars=extra_vars, use_site_vars=False, **kwargs)

    def fail(self, extra_vars=None):
        result = self.play(self.playbook, extra_vars=extra_vars, use_site_vars=False,
                           env={"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"})
        assert result.rc != 0, result.output[-3000:]
        for task in (t for p in json.loads(result.stdout)["plays"] for t in p["tasks"]):
            host = task["hosts"].get("localhost", {})
            if host.get("failed"):
                assert "\n" not in host["msg"], host["msg"]
                return result, host["msg"]
        raise AssertionError("no failed task:\n" + result.stdout[-3000:])


@pytest.fixture
def reset(cluster):
    return lambda: cluster.localcp("reset")


def load_yaml(path):
    with open(path) as fh:
        return yaml.safe_load(fh)
