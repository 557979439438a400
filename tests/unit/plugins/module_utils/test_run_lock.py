"""The run lock's rules (module_utils/run_lock.py): who may write the Lease when, and what the one-line failures say."""

import datetime

import pytest
from ansible_collections.teg.istio.plugins.module_utils import run_lock

NOW = datetime.datetime(2026, 12, 5, 3, 0, 0, tzinfo=datetime.timezone.utc)
OURS = run_lock.holder_identity(None, "runner", "ctl-1", 4711, "aaaa1111", "0123456789ab")
THEIRS = run_lock.holder_identity("4242", "runner", "awx-node", 99, "bbbb2222", "0123456789ab")


def lease(holder, renewed_seconds_ago, duration=60, acquired_seconds_ago=None):
    renewed = NOW - datetime.timedelta(seconds=renewed_seconds_ago)
    acquired = NOW - datetime.timedelta(seconds=acquired_seconds_ago or renewed_seconds_ago)
    return {"metadata": {"name": "teg-istio-run", "namespace": "kube-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "leaseTransitions": 2,
                     "acquireTime": run_lock.format_time(acquired), "renewTime": run_lock.format_time(renewed)}}


def test_identity_names_the_awx_job_else_user_host_and_pid():
    assert run_lock.holder_name(THEIRS) == "AWX job 4242"
    assert run_lock.holder_name(OURS) == "runner@ctl-1 pid 4711"
    # The random token tells two runs of one job apart.
    assert run_lock.holder_identity("4242", "u", "h", 1, "x", "p") != run_lock.holder_identity("4242", "u", "h", 1, "y", "p")


def test_only_a_holder_outside_awx_names_a_process_to_look_up():
    assert run_lock.holder_process(OURS) == (4711, "0123456789ab")
    assert run_lock.holder_process(THEIRS) is None
    assert run_lock.holder_process("someone else's") is None and run_lock.holder_process(None) is None


@pytest.mark.parametrize("current, expected", [
    (None, "create"),
    (lease(OURS, 50), "renew"),
    (lease(OURS, 500), "renew"),  # ours, even expired: nobody took it over
    (lease(THEIRS, 59), "wait"),
    (lease(THEIRS, 60), "take"),  # the lease ends at renewTime + leaseDurationSeconds
    (lease(THEIRS, 3600), "take"),  # a killed run's
    (lease(None, 1), "take"),  # released by hand (holder cleared)
    ({"metadata": {}, "spec": {"holderIdentity": THEIRS}}, "take"),  # no times: nobody renews it
], ids=["absent", "ours", "ours-expired", "theirs-running", "theirs-just-expired", "theirs-killed", "no-holder",
        "no-times"])
def test_decide(current, expected):
    assert run_lock.decide(current, OURS, NOW) == expected


def test_a_holder_whose_process_is_gone_is_taken_over_before_its_lease_expires():
    assert run_lock.decide(lease(THEIRS, 1), OURS, NOW, holder_gone=True) == "take"
    assert run_lock.decide(lease(OURS, 1), OURS, NOW, holder_gone=True) == "renew"


def test_taking_over_counts_a_transition_and_renewing_keeps_the_acquisition():
    taken = run_lock.lease_spec(OURS, 900, NOW, lease(THEIRS, 3600)["spec"])
    assert taken["holderIdentity"] == OURS and taken["leaseDurationSeconds"] == 900
    assert taken["acquireTime"] == taken["renewTime"] == run_lock.format_time(NOW)
    assert taken["leaseTransitions"] == 3
    renewed = run_lock.lease_spec(OURS, 900, NOW, lease(OURS, 30, acquired_seconds_ago=300)["spec"])
    assert renewed["acquireTime"] == run_lock.format_time(NOW - datetime.timedelta(seconds=300))
    assert renewed["renewTime"] == run_lock.format_time(NOW) and renewed["leaseTransitions"] == 2
    assert run_lock.lease_spec(OURS, 900, NOW)["leaseTransitions"] == 0


def test_expiry_reads_both_micro_time_forms():
    spec = {"renewTime": "2026-12-05T03:00:00Z", "leaseDurationSeconds": 30}
    assert run_lock.expires_at(spec) == NOW + datetime.timedelta(seconds=30)
    assert run_lock.expires_at({"renewTime": "yesterday", "leaseDurationSeconds": 30}) is None


def test_refusal_is_one_line_naming_the_holder_its_lease_and_the_ways_out():
    line = run_lock.refusal("kube-system/teg-istio-run", lease(THEIRS, 10, acquired_seconds_ago=100)["spec"], 0,
                            "run_lock_wait_timeout", "run_lock_lease_seconds")
    assert "\n" not in line
    assert line.startswith("kube-system/teg-istio-run is held by AWX job 4242 since 2026-12-05T02:58:20.000000Z, "
                           "its lease running until 2026-12-05T03:00:50.000000Z")
    for fix in ("raise run_lock_wait_timeout", "run_lock_lease_seconds", "kubectl delete lease -n kube-system teg-istio-run"):
        assert fix in line
    assert "bbbb2222" not in line


def test_a_lost_lock_names_the_new_holder_and_the_variable():
    line = run_lock.lost("kube-system/teg-istio-run", lease(THEIRS, 1)["spec"], "run_lock_lease_seconds")
    assert "\n" not in line and "held by AWX job 4242" in line and "raise run_lock_lease_seconds" in line
