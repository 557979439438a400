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


@pytest.mark.parametrize("failed", [None, {"localhost": "boom"}], ids=["converged", "refused"])
def test_a_run_of_one_host_prints_no_block(failed):
    assert _summary({"localhost": False}, failed=failed) == []
