"""The collection's modules run inside ansible-playbook (plugins/action/, plugins/plugin_utils/_inprocess.py)
and behave as the module process would: check mode as a server-side dry run, diff, the task's
`environment:`, no_log, argument-spec validation, module_defaults, one-line connection errors, and the
fallback to a module process when the task is delegated. Against the local control plane; the API
server's audit log tells dry runs from writes, and a python wrapper that logs each module process it
runs tells an in-process run (no line) from a module process (one line)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rbac_audit
from conftest import REPO, PlaybookRun

PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "inprocess.yml"
NS = "envoy-gateway-system"
SECRET = "not-a-real-token-0123456789abcdef"


@pytest.fixture(scope="module")
def fresh(cluster):
    cluster.localcp("reset")
    return cluster


@pytest.fixture
def interpreter(tmp_path):
    """A python for module processes that appends one line per process to a log."""
    log = tmp_path / "module-processes.log"
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper, log


@pytest.fixture
def no_kubeconfig_home(tmp_path):
    """A HOME without ~/.kube/config (kubernetes.core's last resort), inside the test's folder: ansible-playbook
    makes its ~/.ansible there, never outside the test's own files."""
    return tmp_path / "home"


def run_case(cluster, interpreter, case, check=False, diff=False, extra=None, env=None, unset=()):
    """Run one case of the playbook with the json callback; (PlaybookRun, the case's task result, module
    processes started)."""
    wrapper, log = interpreter
    extra_vars = {"case": case, "module_interpreter": str(wrapper), **(extra or {})}
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(PLAYBOOK), "-e", json.dumps(extra_vars)]
    cmd += ["--check"] if check else []
    cmd += ["--diff"] if diff else []
    # The invocation block the tests read: ansible-core 2.21+ returns it only when asked (older ones ignore this).
    run_env = dict(cluster.env, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_INJECT_INVOCATION="true",
                   **(env or {}))
    for name in unset:
        run_env.pop(name, None)
    position = cluster.audit_position()
    proc = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, check=False)
    time.sleep(0.2)
    run = PlaybookRun(proc.returncode, proc.stdout, proc.stderr, cluster.mutations_since(position))
    results = [t["hosts"]["localhost"] for p in json.loads(proc.stdout)["plays"] for t in p["tasks"]
               if not t["hosts"]["localhost"].get("skipped")]
    assert len(results) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    processes = log.read_text().splitlines() if log.exists() else []
    return run, results[0], processes


def app_protocol(cluster):
    service = json.loads(cluster.kubectl("get", "service", "envoy-gateway", "-n", NS, "-o", "json").stdout)
    return [p.get("appProtocol") for p in service["spec"]["ports"] if p["port"] == 18000][0]


def test_check_mode_is_a_server_side_dry_run_with_a_diff(fresh, interpreter):
    run, result, processes = run_case(fresh, interpreter, "app_protocol", check=True, diff=True)
    assert processes == [], "ran as a module process"
    assert result["changed"] and "would have set appProtocol tls" in result["msg"], result
    assert run.writes == [], run.describe_writes()
    assert [e["objectRef"]["resource"] for e in run.dry_runs] == ["services"]
    assert result["diff"]["after"]["spec"]["ports"] != result["diff"]["before"]["spec"]["ports"]
    assert app_protocol(fresh) is None


def test_a_real_run_writes_once_without_a_module_process_and_then_nothing(fresh, interpreter):
    run, result, processes = run_case(fresh, interpreter, "app_protocol")
    assert processes == []
    assert result["changed"] and "diff" not in result, result  # no diff unless asked
    assert [(e["verb"], e["objectRef"]["resource"]) for e in run.writes] == [("patch", "services")]
    assert app_protocol(fresh) == "tls"
    again, result, _processes = run_case(fresh, interpreter, "app_protocol")
    assert not result["changed"] and again.events == [], again.describe_writes()
    assert result["invocation"]["module_args"]["name"] == "envoy-gateway"  # as a module reports it


def test_delegated_the_module_runs_as_a_module_process_with_the_same_result(fresh, interpreter):
    fresh.kubectl("patch", "service", "envoy-gateway", "-n", NS, "--type=json",
                  "-p", '[{"op": "remove", "path": "/spec/ports/0/appProtocol"}]', check=False)
    run, result, processes = run_case(fresh, interpreter, "app_protocol_delegated", check=True)
    assert len(processes) == 1, processes
    assert result["changed"] and "would have set appProtocol tls" in result["msg"], result
    assert run.writes == [] and [e["objectRef"]["resource"] for e in run.dry_runs] == ["services"]


def test_the_tasks_environment_carries_the_connection_settings(fresh, interpreter, no_kubeconfig_home):
    unset = ("KUBECONFIG", "K8S_AUTH_KUBECONFIG")
    home = {"HOME": str(no_kubeconfig_home)}
    run, result, processes = run_case(fresh, interpreter, "environment", unset=unset,
                                      extra={"task_kubeconfig": str(fresh.kubeconfig)}, env=home)
    assert run.rc == 0 and processes == [], result
    assert result["cluster"]["kubernetes_version"].startswith("v1.")
    missing = no_kubeconfig_home / "missing-kubeconfig"
    run, result, _processes = run_case(fresh, interpreter, "environment", unset=unset,
                                       extra={"task_kubeconfig": str(missing)}, env=home)
    assert result["failed"] and result["msg"].startswith(
        f"no Kubernetes connection settings: kubeconfig {missing} (from K8S_AUTH_KUBECONFIG) does not exist"), \
        result["msg"]
    assert "\n" not in result["msg"]


def module_process_invocation(cluster, interpreter, case, **kwargs):
    """The arguments the module process of this ansible-core returns for `case` (TEG_ISTIO_INPROCESS=false), no_log
    values as it masks them: before 2.22 AnsibleModule replaces them with VALUE_SPECIFIED_IN_NO_LOG_PARAMETER; from
    2.22 on the controller masks every registered secret wherever it is shown ($REDACTED$), and a value that is no
    secret (a kubeconfig path) is shown."""
    env = dict(kwargs.pop("env", None) or {}, TEG_ISTIO_INPROCESS="false")
    _run, result, processes = run_case(cluster, interpreter, case, env=env, **kwargs)
    assert processes, "the off switch ran no module process"
    return result["invocation"]["module_args"]


def test_module_defaults_of_the_action_group_reach_the_in_process_module(fresh, interpreter, no_kubeconfig_home):
    arguments = {"unset": ("KUBECONFIG", "K8S_AUTH_KUBECONFIG"), "extra": {"task_kubeconfig": str(fresh.kubeconfig)},
                 "env": {"HOME": str(no_kubeconfig_home)}}
    run, result, processes = run_case(fresh, interpreter, "module_defaults", **arguments)
    assert run.rc == 0 and processes == [], result
    invocation = result["invocation"]["module_args"]
    assert invocation["kubeconfig"] in (str(fresh.kubeconfig), "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"), invocation
    assert invocation == module_process_invocation(fresh, interpreter, "module_defaults", **arguments)


def test_a_context_the_kubeconfig_lacks_is_one_line_naming_its_contexts(fresh, interpreter):
    run, result, _processes = run_case(fresh, interpreter, "wrong_context")
    assert run.rc != 0
    assert result["msg"].startswith(f"context no-such-context is not in kubeconfig {fresh.kubeconfig}"), result["msg"]
    assert "set K8S_AUTH_CONTEXT" in result["msg"] and "\n" not in result["msg"]


def _api_host(cluster):
    config = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    return config["clusters"][0]["cluster"]["server"]


def test_no_log_options_are_masked_and_no_log_hides_the_result(fresh, interpreter):
    extra = {"api_host": _api_host(fresh), "secret_token": SECRET}
    unset = ("KUBECONFIG", "K8S_AUTH_KUBECONFIG")
    run, result, _processes = run_case(fresh, interpreter, "api_key", extra=extra, unset=unset)
    assert result["failed"] and "401 Unauthorized" in result["msg"], result["msg"]
    assert result["invocation"]["module_args"]["api_key"] in ("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER", "$REDACTED$")
    assert result["invocation"]["module_args"] == module_process_invocation(fresh, interpreter, "api_key", extra=extra,
                                                                            unset=unset)
    assert SECRET not in run.output
    run, result, _processes = run_case(fresh, interpreter, "no_log", extra=extra, unset=unset)
    assert result["censored"].startswith("the output has been hidden"), result
    # The API server's answer is hidden too: match its message, not a bare "401", which the JSON callback's
    # timestamps can carry (a flake on 2026-12-04: "...37.684012Z").
    assert SECRET not in run.output and "Unauthorized" not in run.output


@pytest.mark.parametrize("case, expected", [
    ("unsupported", "Unsupported parameters for (teg.istio.cluster_facts) module: no_such_option."),
    ("bad_type", "argument 'port' is of type str and we were unable to convert to int"),
    ("required_if", "state is present but all of the following are missing: envoyproxy_namespace"),
])
def test_arguments_are_validated_against_the_modules_spec(fresh, interpreter, case, expected):
    run, result, processes = run_case(fresh, interpreter, case)
    assert run.rc != 0 and processes == []
    assert expected in result["msg"], result["msg"]
    assert run.events == []


PARITY_PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "parity.yml"
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))


def run_parity(cluster, interpreter, inprocess, check):
    """parity.yml with the in-process path on or off (the switch under test, TEG_ISTIO_INPROCESS), with --diff:
    (PlaybookRun, {module: its task's result}, the collection's modules that ran as a module process, each once)."""
    wrapper, log = interpreter
    before = len(log.read_text().splitlines()) if log.exists() else 0
    extra_vars = {"module_interpreter": str(wrapper), "parity_chart": str(REPO / "tests" / "charts" / "ztunnel-test")}
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(PARITY_PLAYBOOK), "-e", json.dumps(extra_vars),
           "--diff"] + (["--check"] if check else [])
    env = dict(cluster.env, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", TEG_ISTIO_INPROCESS=str(inprocess))
    position = cluster.audit_position()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    time.sleep(0.2)
    run = PlaybookRun(proc.returncode, proc.stdout, proc.stderr, cluster.mutations_since(position))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {t["task"]["name"].removeprefix("Parity: "): t["hosts"]["localhost"]
               for p in json.loads(proc.stdout)["plays"] for t in p["tasks"] if t["task"]["name"].startswith("Parity: ")}
    lines = log.read_text().splitlines()[before:] if log.exists() else []
    # The wrapper logs the AnsiballZ file each module process runs: AnsiballZ_<module>.py.
    processes = sorted({m for m in MODULES for line in lines if f"AnsiballZ_{m}.py" in line})
    return run, results, processes


def comparable(value):
    """A task result without what legitimately differs between two runs of the same task, whatever runs it: the
    restart time rollout_restart stamps (kubectl's restartedAt annotation, the time of the run), an object's
    resourceVersion, which every write moves on (outside check mode the first run's writes and their undo come
    between the two runs; service_app_protocol's JSON patch tests it too), and the ansible-playbook process run_lock's action plugin names in its `controller`
    argument (each run is another process). Everything else (changed, msg, warnings, invocation, the objects before
    and after, the diff) must be equal."""
    if isinstance(value, dict):
        if value.get("path") == "/metadata/resourceVersion":  # a JSON patch's test of it
            value = {k: v for k, v in value.items() if k != "value"}
        return {k: comparable(v) for k, v in value.items()
                if k not in ("kubectl.kubernetes.io/restartedAt", "resourceVersion", "controller")}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def differing_paths(left, right, path=""):
    """Where two results differ, as paths (restartedAt of .../annotations): the assertion's message."""
    if isinstance(left, dict) and isinstance(right, dict):
        return [p for key in sorted(set(left) | set(right), key=str)
                for p in differing_paths(left.get(key), right.get(key), f"{path}/{key}")]
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [p for i, (a, b) in enumerate(zip(left, right)) for p in differing_paths(a, b, f"{path}/{i}")]
    return [] if left == right else [f"{path}: {left!r:.80} != {right!r:.80}"]


@pytest.mark.parametrize("check", [True, False], ids=["check-diff", "run-diff"])
def test_every_module_gives_the_same_result_in_process_and_as_a_module_process(fresh, interpreter, check):
    """The off switch (TEG_ISTIO_INPROCESS=false) runs every module as a module process, and the results match."""
    # From a reset cluster: the earlier tests of this module leave Service envoy-gateway patched (appProtocol, the
    # record of its prior value), which the Undo tasks would not put back, so the two runs would read different state.
    fresh.localcp("reset")
    inprocess, results, processes = run_parity(fresh, interpreter, inprocess=True, check=check)
    assert processes == [] and sorted(results) == MODULES, (processes, sorted(results))
    module, module_results, module_processes = run_parity(fresh, interpreter, inprocess=False, check=check)
    assert module_processes == MODULES
    for name in MODULES:
        assert comparable(module_results[name]) == comparable(results[name]), \
            (name, differing_paths(comparable(module_results[name]), comparable(results[name])))
    if check:
        assert inprocess.writes == [] and module.writes == [], inprocess.describe_writes() + module.describe_writes()
    else:
        assert results["service_app_protocol"]["changed"] and results["helm_releases"]["changed"]


def _route(cluster, name, hostname):
    version = "v1" if cluster.matrix == "current" else "v1beta1"
    return {"apiVersion": f"gateway.networking.k8s.io/{version}", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"parentRefs": [{"name": "apps"}], "hostnames": [hostname]}}


def test_objects_read_as_absent_are_created_without_a_read_and_one_that_exists_goes_the_usual_way(fresh, interpreter):
    """k8s_objects' absent_definitions (expose_app's new routes and VirtualServices): one create each, no read first;
    an object that exists by then (the API server answers 409) is read and patched as kubernetes.core.k8s would.
    Run as the ServiceAccount of rbac/, whose reads the audit log records too."""
    envs = rbac_audit.bind(fresh)
    names = [f"absent-{n}" for n in range(6)]
    try:
        fresh.kubectl("apply", "-f", "-", stdin=json.dumps(_route(fresh, "absent-exists", "before.example.com")))
        position = fresh.audit_position()
        wanted = [_route(fresh, name, f"{name}.example.com") for name in names]
        wanted += [_route(fresh, "absent-exists", "after.example.com")]
        run, result, processes = run_case(fresh, interpreter, "absent_definitions", extra={"absent_definitions": wanted},
                                          env=envs[rbac_audit.FULL])
        assert run.rc == 0 and processes == [], result
        requests = [(e["verb"], e["objectRef"].get("name"), e["responseStatus"]["code"])
                    for e in rbac_audit.events_since(fresh, position, [rbac_audit.user(rbac_audit.FULL)])
                    if e.get("objectRef", {}).get("resource") == "httproutes"]
        # Sent several at once: in any order, each new one once, created.
        assert sorted(r for r in requests if r[1] != "absent-exists") == [("create", name, 201) for name in names]
        assert [r for r in requests if r[1] == "absent-exists"] == [
            ("create", "absent-exists", 409), ("get", "absent-exists", 200), ("patch", "absent-exists", 200)]
        results = result["result"]["results"]
        assert [(r["method"], r["changed"], r["result"]["metadata"]["name"]) for r in results] == (
            [("create", True, name) for name in names] + [("update", True, "absent-exists")])
        assert "managedFields" not in results[0]["result"]["metadata"]
        hostnames = json.loads(fresh.kubectl("get", "httproute", "absent-exists", "-n", NS, "-o", "json").stdout)
        assert hostnames["spec"]["hostnames"] == ["after.example.com"]
    finally:
        fresh.kubectl("delete", "httproute", "-n", NS, "--ignore-not-found", "absent-exists", *names)
        rbac_audit.unbind(fresh)
