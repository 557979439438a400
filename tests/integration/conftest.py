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


# The run lock's Lease (roles/run_lock, the module teg.istio.run_lock's defaults).
RUN_LOCK = {"resource": "leases", "namespace": "kube-system", "name": "teg-istio-run"}


def is_run_lock(event):
    """Whether an audit event is a request on the run lock's Lease (the create names it only in its body)."""
    ref = event.get("objectRef") or {}
    return (ref.get("resource"), ref.get("namespace")) == (RUN_LOCK["resource"], RUN_LOCK["namespace"]) and \
        ref.get("name", RUN_LOCK["name"]) == RUN_LOCK["name"]


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

    @property
    def crds(self):
        """The upstream CRD folder the launcher resolved for this cluster (TEG_ISTIO_CRDS_DIR, or the folder made
        from crds.lock, mostly out of Go modules: tests/localcp/localcp.py crds_dir()). Tests read
        the upstream CRDs from here only; tests/lint/lint.sh refuses any other way."""
        return Path(json.loads((self.state_dir / "state.json").read_text())["crds"])

    def localcp(self, *args):
        return subprocess.run([sys.executable, str(LOCALCP), *args], env=self.env, check=True,
                              capture_output=True, text=True)

    def kubectl(self, *args, check=True, stdin=None):
        return subprocess.run(["kubectl", *args], env=self.env, check=check, capture_output=True,
                              text=True, input=stdin)

    def get_or_none(self, *args):
        """`kubectl get <args> -o json` parsed, or None when the object is not found; any other failure of the read
        fails the test, so that a broken read never passes for an absent object."""
        proc = self.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            assert "NotFound" in proc.stderr, proc.stderr
            return None
        return json.loads(proc.stdout)

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

    def events_since(self, position):
        """Every audit event after byte `position` of the audit log."""
        with open(self.audit_log, "rb") as fh:
            fh.seek(position)
            for line in fh:
                try:
                    yield json.loads(line)
                except ValueError:
                    # Only a killed API server (the recovery tests) leaves an event cut off mid-line; the
                    # request it recorded was cut off with it.
                    continue

    def mutations_since(self, position, user=None):
        """Mutating audit events after byte `position` of the audit log, except the cluster's own; only
        those of `user` when given. The run lock's Lease is among them: a run with nothing to write takes no lock,
        so a rerun's "no write" includes the Lease."""
        events = []
        for event in self.events_since(position):
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

    @property
    def configuration_writes(self):
        """The writes apart from the run lock's Lease (taken, renewed between steps and released by every run that
        has anything to write): what a run changed of the cluster's configuration."""
        return [e for e in self.writes if not is_run_lock(e)]

    def describe_writes(self):
        return [f"{e['verb']} {e['requestURI']}" for e in self.writes]

    def warnings(self):
        """Ansible's [WARNING] messages of the run, each on one line (the default callback wraps long ones)."""
        return " ".join(self.output.split()).split("[WARNING]: ")[1:]

    def recap(self):
        """The PLAY RECAP counters of localhost, e.g. {'ok': 12, 'changed': 0, 'failed': 0}."""
        if self.stdout.lstrip().startswith("{"):  # the json callback (JSON_CALLBACK)
            return dict(json.loads(self.stdout)["stats"]["localhost"])
        for line in self.stdout.splitlines():
            if line.startswith("localhost") and "ok=" in line:
                return {k: int(v) for k, v in (part.split("=") for part in line.split()[2:])}
        raise AssertionError("no PLAY RECAP in the output:\n" + self.output[-3000:])


# The state directory of a cluster that is already running and outlives the session (tests/matrix/matrix.py runs
# one pytest session per Ansible version against ONE cluster): the session neither starts nor stops it.
SHARED_CLUSTER = os.environ.get("TEG_ISTIO_SHARED_CLUSTER")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    state_dir = Path(SHARED_CLUSTER) if SHARED_CLUSTER else tmp_path_factory.mktemp(f"localcp-{MATRIX}")
    env = dict(os.environ, LOCALCP_DIR=str(state_dir))
    c = Cluster(state_dir=state_dir, matrix=MATRIX, env=env)
    try:
        c.localcp("status" if SHARED_CLUSTER else "up", *([] if SHARED_CLUSTER else ["--matrix", MATRIX]))
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"cluster-up failed:\n{exc.stderr}", pytrace=False)
    for line in c.localcp("env").stdout.splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        c.env[key] = value.replace("$PATH", os.environ["PATH"])
    c.env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    c.env["K8S_AUTH_KUBECONFIG"] = str(c.kubeconfig)
    yield c
    if not SHARED_CLUSTER:
        c.localcp("down")


@pytest.fixture(scope="session")
def k8s(cluster):
    from kubernetes import config, dynamic
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    return dynamic.DynamicClient(api)


def playbook_command(playbook, extra_vars=None, check=False, diff=False, args=(), use_site_vars=True):
    """The ansible-playbook command line of a playbook of this repository (or at an absolute path)."""
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
    return cmd


def _run_playbook(cluster, playbook, extra_vars=None, check=False, diff=False, args=(), use_site_vars=True,
                  env=None):
    cmd = playbook_command(playbook, extra_vars, check, diff, args, use_site_vars)
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


# The json stdout callback: a failed task's result is read back exactly as the collection wrote it.
JSON_CALLBACK = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
# What a Python traceback or a crashed module leaves in Ansible's output or in a task result.
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "The full traceback is", "MODULE FAILURE")
# ansible-core's own header when a role's argument spec refuses its variables (a role run on its own;
# site.yml checks every role's variables first and says it in one line, playbooks/tasks/validate_variables.yml).
ARGUMENT_SPEC_HEADER = "Validation of arguments failed:\n"


def failed_results(run):
    """The failed task results of a run made with JSON_CALLBACK, in order (rescued ones included)."""
    assert run.stdout.lstrip().startswith("{"), "run the playbook with env=JSON_CALLBACK:\n" + run.output[-3000:]
    return [host for play in json.loads(run.stdout)["plays"] for task in play["tasks"]
            for name, host in task["hosts"].items() if name == "localhost" and host.get("failed")]


def task_results(run, name):
    """The localhost results of the tasks called `name` (a role's task with or without the role's prefix), from a
    run made with JSON_CALLBACK: what a task registered, read as the collection returned it."""
    assert run.stdout.lstrip().startswith("{"), "run the playbook with env=JSON_CALLBACK:\n" + run.output[-3000:]
    return [host for play in json.loads(run.stdout)["plays"] for task in play["tasks"]
            if task["task"]["name"].split(" : ")[-1] == name for host_name, host in task["hosts"].items() if host_name == "localhost"]


def assert_one_line_failure(run, cause, fix):
    """The single check for every refusal and fault: the run failed (rc != 0); the failure that stopped it is one
    line holding every fragment of `cause` (what is wrong, naming the object) and of `fix` (what to do), with no
    traceback, module crash or exception record; and ansible printed no traceback. Returns that line.

    The run must be made with env=JSON_CALLBACK. A failure that a block rescued (to say it in one line) may carry
    the failed module's exception record, which Ansible shows only at -vvv; the rescue's line is what stops the
    run and is what is checked. A role's own argument-spec refusal carries ansible-core's fixed header line
    (ARGUMENT_SPEC_HEADER) before its one line per problem: exactly one problem is accepted."""
    assert cause and fix, "name both the cause and the fix fragments"
    assert run.rc != 0, run.output[-3000:]
    for marker in TRACEBACK_MARKERS:
        assert marker not in run.stderr, run.stderr[-4000:]
    failures = failed_results(run)
    assert failures, "rc != 0 but no failed task:\n" + run.output[-3000:]
    final = failures[-1]
    # ansible-core 2.19 records "(traceback unavailable)" on every failure, a real one only where code raised.
    assert "Traceback" not in str(final.get("exception", "")), final["exception"]
    assert not final.get("module_stderr") and not final.get("module_stdout"), final
    msg = final.get("msg")
    assert isinstance(msg, str) and msg.strip(), final
    for marker in TRACEBACK_MARKERS:
        assert marker not in msg, msg
    if final.get("argument_errors") is not None:
        assert msg.startswith(ARGUMENT_SPEC_HEADER), msg
        assert len(final["argument_errors"]) == 1, final["argument_errors"]
        msg = msg.removeprefix(ARGUMENT_SPEC_HEADER)
    assert "\n" not in msg.strip(), msg
    for fragment in [*cause, *fix]:
        assert fragment in msg, f"{fragment!r} not in: {msg}"
    return msg


class RolePlaybook:
    """A role's test playbook run without the site vars: `run` returns the PlaybookRun; `fail` expects a
    failure and returns (run, its one line), checked by assert_one_line_failure."""

    def __init__(self, play, playbook):
        self.play, self.playbook = play, playbook

    def run(self, extra_vars=None, **kwargs):
        return self.play(self.playbook, extra_vars=extra_vars, use_site_vars=False, **kwargs)

    def fail(self, extra_vars=None, cause=(), fix=()):
        result = self.play(self.playbook, extra_vars=extra_vars, use_site_vars=False, env=JSON_CALLBACK)
        return result, assert_one_line_failure(result, cause, fix)


@pytest.fixture
def reset(cluster):
    return lambda: cluster.localcp("reset")


def load_yaml(path):
    with open(path) as fh:
        return yaml.safe_load(fh)


def pytest_terminal_summary(terminalreporter):
    """The verbs rbac/clusterrole.yml grants that no run of this session as its ServiceAccounts used (flagged, not
    failed: a session that ran only some modules used only some), and the report of what they used."""
    import rbac_audit
    if not rbac_audit.USED:
        return
    used = {tuple(t) for triples in rbac_audit.USED.values() for t in triples}
    extra = rbac_audit.unused(used, rbac_audit.granted())
    report = REPO / "tests" / "output" / f"rbac-usage-{MATRIX}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"modules": rbac_audit.USED, "unused": extra}, indent=1))
    modules = ", ".join(sorted(rbac_audit.USED))
    terminalreporter.write_sep("-", f"rbac: the runs of {modules} as rbac/'s ServiceAccounts")
    for role, triples in sorted(extra.items()):
        for group, resource, verb in triples:
            terminalreporter.write_line(f"rbac: {role} grants {verb} on {group or 'core'}/{resource}, "
                                        "which no run of this session used")
    terminalreporter.write_line(f"rbac: report in {report.relative_to(REPO)}")
