"""The run lock (roles/run_lock, the Lease kube-system/teg-istio-run): two runs of site.yml on one cluster never
interleave. One scenario on one cluster, with the API server's audit log as the witness:

1. run K (site.yml as AWX job 4242, a 30 s lease) is killed with SIGKILL after its first write of the configuration;
2. run A (site.yml, admin) finds K's Lease, waits, and takes it over once K's lease expired;
3. while A holds the lock: run B (site.yml, wait 0) refuses in one line naming A; a check-mode site.yml neither waits
   nor writes the Lease and says so; run C (site.yml with a second hostname for httpbin, a long wait) waits for A
   before it plans, then takes the lock and applies its change (rc 0); run D (site.yml as A declared it) waits for
   A too, then finds nothing to do and writes nothing, the Lease included;
4. verify.yml passes afterwards (C's declaration, the last applied).

B, D and the check-mode run are one ServiceAccount, C another, A and K the admin: the audit log tells their writes apart
by user. All of them are bound only to rbac/clusterrole.yml's roles but A and K, so the Lease's rules there are used."""

import datetime
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import (JSON_CALLBACK, MATRIX, REPO, PlaybookRun, assert_one_line_failure, is_run_lock, load_yaml,
                      playbook_command, task_results)

# The Lease API (coordination.k8s.io/v1, Kubernetes >= 1.14) and the lock's tasks are the same for both flavours.
# The legacy lane: the lock does not depend on the flavour, and the current lane is the longer one (make test's budget).
pytestmark = pytest.mark.skipif(MATRIX != "legacy", reason="the run lock does not depend on the flavour")

RBAC = REPO / "rbac"
ADMIN = "admin"
NAMESPACE = "teg-istio-automation"
WAITER = "teg-istio"  # rbac/binding-example.yml's ServiceAccount: run C
REFUSED = "teg-istio-second"  # bound to the same roles: run B and the check-mode run
KILLED_LEASE = 30
ACQUIRE = "Take the run lock of this cluster, or wait for the run that holds it"
AWAIT = "Wait for a run that holds this cluster's run lock"
# Run C's declaration: the sample under a second hostname as well, so C has something to write after A.
C_VARS = {"expose_app_apps": [{"name": "httpbin", "namespace": "httpbin", "service": "httpbin", "port": 8000,
                               "hostnames": ["www.example.com", "api.example.com"], "path_prefix": "/httpbin"}]}


def _holder(identity):
    """The holder a Lease's holderIdentity names, without the run's random token: `AWX job N (run x)` -> `AWX job N`."""
    return identity.split(" (run ", 1)[0]


def _time(value):
    """A Lease MicroTime or an audit timestamp (RFC 3339, UTC)."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _user(account):
    return f"system:serviceaccount:{NAMESPACE}:{account}"


def _lease(cluster):
    return cluster.get_or_none("lease", "teg-istio-run", "-n", "kube-system")


def _held_by(cluster, pid):
    """The Lease when the ansible-playbook `pid` holds it, else None."""
    lease = _lease(cluster)
    holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
    return lease if _holder(holder).endswith(f" pid {pid}") else None


def _until(what, predicate, timeout=600):
    """Poll `predicate` every second until it returns something true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"gave up waiting for {what}")


class Background:
    """A playbook run in its own process group (so that SIGKILL reaches its workers), output to files."""

    def __init__(self, cluster, tmp, name, extra_vars, identity=None, check=False):
        self.name, self.out, self.err = name, tmp / f"{name}.out", tmp / f"{name}.err"
        extra_vars = dict(extra_vars, **(identity or {}))
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(playbook_command("site.yml", extra_vars, check=check), cwd=REPO,
                                         env=dict(cluster.env, **JSON_CALLBACK), stdout=out, stderr=err,
                                         start_new_session=True)

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def finish(self, timeout=1800):
        rc = self.proc.wait(timeout=timeout)
        return PlaybookRun(rc, self.out.read_text(), self.err.read_text(), [])


def _token(cluster, account):
    """teg_istio_host, teg_istio_api_key and teg_istio_ca_cert of `account`, bound to rbac/clusterrole.yml's roles."""
    token = cluster.kubectl("create", "token", account, "-n", NAMESPACE, "--duration=2h").stdout.strip()
    config = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)["clusters"][0]["cluster"]
    return {"teg_istio_host": config["server"], "teg_istio_api_key": token,
            "teg_istio_ca_cert": config["certificate-authority"]}


@pytest.fixture(scope="module")
def scenario(cluster, tmp_path_factory):
    cluster.localcp("reset")
    tmp = tmp_path_factory.mktemp("run-lock")
    cluster.kubectl("apply", "-f", str(RBAC / "clusterrole.yml"), "-f", str(RBAC / "binding-example.yml"))
    cluster.kubectl("create", "serviceaccount", REFUSED, "-n", NAMESPACE)
    for role in ("teg-istio", "teg-istio-install"):
        cluster.kubectl("create", "clusterrolebinding", f"{role}-second", f"--clusterrole={role}",
                        f"--serviceaccount={NAMESPACE}:{REFUSED}")
    waiter, refused = _token(cluster, WAITER), _token(cluster, REFUSED)
    position = cluster.audit_position()

    killed = Background(cluster, tmp, "killed", {"awx_job_id": 4242, "run_lock_lease_seconds": KILLED_LEASE})
    _until("run K's first write", lambda: [e for e in cluster.mutations_since(position, user=ADMIN)
                                           if "dryRun=All" not in e["requestURI"] and not is_run_lock(e)])
    killed.kill()
    killed_lease = _lease(cluster)

    holder = Background(cluster, tmp, "holder", {"run_lock_wait_timeout": 600})
    held = _until("run A to hold the lock", lambda: _held_by(cluster, holder.proc.pid))
    refused_run = Background(cluster, tmp, "refused", {"run_lock_wait_timeout": 0}, refused)
    check = Background(cluster, tmp, "check", {}, refused, check=True)
    waiting = Background(cluster, tmp, "waiting", dict(C_VARS, run_lock_wait_timeout=1500), waiter)
    idle = Background(cluster, tmp, "idle", {"run_lock_wait_timeout": 1500}, refused)
    runs = {"holder": holder.finish(), "refused": refused_run.finish(), "check": check.finish(),
            "waiting": waiting.finish(), "idle": idle.finish()}
    time.sleep(0.2)  # the audit backend is blocking, this only lets the file system settle
    return dict(runs, killed_lease=killed_lease, held=held, holder_pid=holder.proc.pid,
                events=cluster.mutations_since(position))


def _writes(events, user, lease=False):
    return [e for e in events if e["user"]["username"] == user and "dryRun=All" not in e["requestURI"]
            and is_run_lock(e) == lease]


def test_a_killed_runs_lock_is_taken_over_once_its_lease_expired(scenario):
    killed = scenario["killed_lease"]["spec"]
    assert _holder(killed["holderIdentity"]) == "AWX job 4242"
    assert killed["leaseDurationSeconds"] == KILLED_LEASE
    assert scenario["holder"].rc == 0, scenario["holder"].output[-4000:]
    (acquired,) = task_results(scenario["holder"], ACQUIRE)
    assert (acquired["acquisition"], acquired["previous_holder"]) == ("take", "AWX job 4242"), acquired
    # A took the Lease over no sooner than K's lease ran out (both times from the controller's clock).
    taken = scenario["held"]["spec"]
    expired = _time(killed["renewTime"]) + datetime.timedelta(seconds=killed["leaseDurationSeconds"])
    assert _time(taken["acquireTime"]) >= expired, (killed, taken)
    assert taken["leaseTransitions"] == killed["leaseTransitions"] + 1


def test_a_run_that_may_not_wait_refuses_in_one_line_naming_the_holder(scenario):
    holder = f"pid {scenario['holder_pid']}"
    assert_one_line_failure(scenario["refused"], cause=("kube-system/teg-istio-run is held by", holder),
                            fix=("raise run_lock_wait_timeout", "kubectl delete lease -n kube-system teg-istio-run"))
    # Neither B, D nor the check-mode run wrote anything, the Lease included.
    assert _writes(scenario["events"], _user(REFUSED)) == []
    assert _writes(scenario["events"], _user(REFUSED), lease=True) == []


def test_check_mode_takes_no_lock_and_says_so(scenario):
    run = scenario["check"]
    # Its rc is not asserted: it plans while A writes, which is what check mode is for, not what this test is about.
    (said,) = [r for r in task_results(run, "Say that check mode takes no run lock") if not r.get("skipped")]
    assert said["msg"].startswith("check mode takes no run lock; kube-system/teg-istio-run is held by"), said
    assert f"pid {scenario['holder_pid']} since " in said["msg"], said  # run A, the holder, by name


def test_a_waiting_run_plans_after_the_holder_released_then_takes_the_lock_and_verify_passes(scenario, play):
    run = scenario["waiting"]
    assert run.rc == 0, run.output[-4000:]
    (awaited,) = task_results(run, AWAIT)
    assert awaited["waited"] > 0 and _holder(awaited["previous_holder"]).endswith(f"pid {scenario['holder_pid']}"), \
        awaited
    (acquired,) = task_results(run, ACQUIRE)
    assert acquired["acquisition"] == "create", acquired
    verify = play("verify.yml", extra_vars=C_VARS)
    assert verify.rc == 0, verify.output[-4000:]


def test_a_waiting_run_with_nothing_to_do_writes_nothing_not_even_the_lease(scenario):
    run = scenario["idle"]
    assert run.rc == 0, run.output[-4000:]
    (awaited,) = task_results(run, AWAIT)
    assert awaited["waited"] > 0, awaited
    (skipped,) = task_results(run, ACQUIRE)
    assert skipped.get("skipped"), skipped
    # D's ServiceAccount is B's, which wrote nothing either (previous test): none of that user's writes is D's.
    assert _writes(scenario["events"], _user(REFUSED)) == []
    assert _writes(scenario["events"], _user(REFUSED), lease=True) == []


def _at(event, stage):
    return _time(event[stage])


def test_the_audit_log_shows_no_interleaved_writes(scenario):
    """Every write of the other runs (B, the check-mode run and C, by their ServiceAccounts) begins after the last write
    of A (the admin's since it took K's Lease over) ended; and on the Lease, A's release ended before C's creation
    of it began."""
    events = scenario["events"]
    taken = _time(scenario["held"]["spec"]["acquireTime"])
    holder_writes = [e for e in _writes(events, ADMIN) if _at(e, "requestReceivedTimestamp") >= taken]
    assert holder_writes, "run A wrote nothing"
    holder_done = max(_at(e, "stageTimestamp") for e in holder_writes)
    for account in (WAITER, REFUSED):
        interleaved = [f"{e['verb']} {e['requestURI']}" for e in _writes(events, _user(account))
                       if _at(e, "requestReceivedTimestamp") < holder_done]
        assert interleaved == [], (account, interleaved)
    released = [e for e in _writes(events, ADMIN, lease=True) if e["verb"] == "delete"]
    waiter_lease = _writes(events, _user(WAITER), lease=True)
    assert released, "run A did not release the Lease"
    assert holder_done <= _at(released[-1], "requestReceivedTimestamp")
    assert [e["verb"] for e in waiter_lease][:1] == ["create"] and waiter_lease[-1]["verb"] == "delete", waiter_lease
    assert _at(released[-1], "stageTimestamp") <= _at(waiter_lease[0], "requestReceivedTimestamp")


def test_a_run_refused_by_its_plan_writes_nothing_and_a_failed_run_releases_the_lock(scenario, play, cluster):
    """A run its plan refuses (a namespace that does not exist) stops before the lock: nothing written, the Lease
    included. A run that fails after it took the lock (a TEG Deployment that never becomes available, so teg_restart
    fails after its timeout) releases it in playbooks/site.yml's always section: the Lease it created is deleted by
    this run."""
    position = cluster.audit_position()
    run = play("site.yml", extra_vars={"teg_istio_prep_namespace": "no-such-ns"}, env=JSON_CALLBACK)
    assert_one_line_failure(run, cause=("no-such-ns",), fix=("teg_istio_prep_namespace",))
    assert run.writes == [], run.describe_writes()
    cluster.kubectl("create", "deployment", "stuck", "-n", "envoy-gateway-system", "--image=registry.invalid/never:1")
    cluster.kubectl("patch", "deployment", "stuck", "-n", "envoy-gateway-system", "--type=merge", "-p", json.dumps(
        {"spec": {"template": {"spec": {"nodeSelector": {"teg.istio/no-such-node": "true"}}}}}))
    try:
        position = cluster.audit_position()
        deployments = load_yaml(REPO / "roles" / "teg_restart" / "defaults" / "main.yml")["teg_restart_deployments"]
        run = play("site.yml", extra_vars=dict(C_VARS, teg_restart_deployments=deployments + ["stuck"],
                                               teg_restart_wait_timeout=10), env=JSON_CALLBACK)
        assert_one_line_failure(run, cause=("Deployment envoy-gateway-system/stuck",), fix=("describe deployment stuck",))
        lease = [(e["verb"], e["responseStatus"]["code"]) for e in cluster.mutations_since(position, user=ADMIN)
                 if is_run_lock(e) and "dryRun=All" not in e["requestURI"]]
        assert lease[0] == ("create", 201) and lease[-1] == ("delete", 200), lease
        assert _lease(cluster) is None
    finally:
        cluster.kubectl("delete", "deployment", "stuck", "-n", "envoy-gateway-system")
