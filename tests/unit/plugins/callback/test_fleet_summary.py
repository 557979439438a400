"""The CLUSTERS block (plugins/callback/fleet_summary.py): one line per cluster of a fleet run, nothing for a run
of one host. Ansible's AggregateStats and a recording display stand in for a run; the fleet run itself is
tests/integration/test_fleet.py."""

from types import SimpleNamespace

import pytest
from ansible.executor.stats import AggregateStats

from ansible_collections.teg.istio.plugins.callback.fleet_summary import CallbackModule


class _Display:
    def __init__(self):
        self.lines = []

    def banner(self, text):
        self.lines.append("== " + text)

    def display(self, text, **_kwargs):
        if text:
            self.lines.append(text)


def _summary(hosts, failed=None):
    callback = CallbackModule()
    callback._display = _Display()
    stats = AggregateStats()
    for host, changed in hosts.items():
        stats.increment("ok", host)
        if changed:
            stats.increment("changed", host)
    for host, msg in (failed or {}).items():
        stats.increment("failures", host)
        callback.v2_runner_on_failed(SimpleNamespace(_host=SimpleNamespace(get_name=lambda h=host: h),
                                                     _result={"msg": msg + "\nsecond line"}))
    callback.v2_playbook_on_stats(stats)
    return callback._display.lines


def test_a_fleet_run_prints_one_line_per_cluster():
    lines = _summary({"eu": False, "us": True}, failed={"ap": "namespace httpbin not found: create it"})
    assert lines == ["== CLUSTERS", "ap: refused: namespace httpbin not found: create it", "eu: converged",
                     "us: changed"]


def test_the_line_of_a_rescue_that_failed_again_is_the_cluster_s_not_the_failure_it_caught():
    callback = CallbackModule()
    callback._display = _Display()
    stats = AggregateStats()
    for host in ("eu", "us"):
        stats.increment("ok", host)
    stats.increment("failures", "eu")
    eu = SimpleNamespace(get_name=lambda: "eu")
    callback.v2_runner_on_failed(SimpleNamespace(_host=eu, _result={"msg": "Failed to patch object: Connection aborted"}))
    callback.v2_runner_on_failed(SimpleNamespace(_host=eu, _result={"msg": "cannot reach the Kubernetes API server"}))
    callback.v2_playbook_on_stats(stats)
    assert callback._display.lines == ["== CLUSTERS", "eu: refused: cannot reach the Kubernetes API server",
                                       "us: converged"]


@pytest.mark.parametrize("failed", [None, {"localhost": "boom"}], ids=["converged", "refused"])
def test_a_run_of_one_host_prints_no_block(failed):
    assert _summary({"localhost": False}, failed=failed) == []


def _verify_result(host, checks, enforced=True, action="teg.istio.mesh_verify"):
    passed = len([c for c in checks if not c["findings"]])
    return SimpleNamespace(_host=SimpleNamespace(get_name=lambda: host), _task=SimpleNamespace(action=action),
                           _result={"checks": checks, "summary": {"passed": passed, "total": len(checks),
                                                                  "enforced": enforced}})


XDS = ("Service envoy-gateway-system/envoy-gateway port 18000 (grpc) has appProtocol None, expected 'tls': rerun "
       "site.yml or the teg_istio_prep role")


def _report(results, failed=()):
    callback = CallbackModule()
    callback._display = _Display()
    stats = AggregateStats()
    for result in results:
        stats.increment("ok", result._host.get_name())
        (callback.v2_runner_on_failed if result._host.get_name() in failed else callback.v2_runner_on_ok)(result)
    callback.v2_playbook_on_stats(stats)
    return callback._display.lines


def test_a_verified_cluster_gets_its_count_even_alone():
    checks = [{"name": "TEG prepared for the mesh", "findings": []}, {"name": "mesh-wide mTLS mode", "findings": []}]
    assert _report([_verify_result("localhost", checks)]) == ["== VERIFY", "verify: localhost: 2/2 checks passed"]


def test_a_failed_check_is_one_line_per_finding_with_its_name_and_fix():
    checks = [{"name": "TEG prepared for the mesh", "findings": [XDS]}, {"name": "mesh-wide mTLS mode", "findings": []}]
    lines = _report([_verify_result("eu", checks), _verify_result("us", checks[1:])], failed=("eu",))
    assert lines[lines.index("== VERIFY"):] == [
        "== VERIFY", "verify: eu: 1/2 checks passed", 'verify: eu: failed "TEG prepared for the mesh": ' + XDS,
        "verify: us: 1/1 checks passed"]


def test_check_mode_says_that_the_findings_are_what_the_run_would_apply():
    checks = [{"name": "TEG prepared for the mesh", "findings": [XDS]}]
    assert _report([_verify_result("localhost", checks, enforced=False)])[1] == (
        "verify: localhost: 0/1 checks passed (check mode: what fails is what this run would apply)")


def test_another_task_returning_checks_is_not_taken_for_verify():
    checks = [{"name": "TEG prepared for the mesh", "findings": []}]
    assert _report([_verify_result("localhost", checks, action="ansible.builtin.debug")]) == []
