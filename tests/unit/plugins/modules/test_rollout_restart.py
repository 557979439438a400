"""Pure logic of teg.istio.rollout_restart: which Deployments to restart, the patch, and when a rollout
counts as done. The API side is covered by tests/integration/test_teg_restart.py."""

import pytest

from ansible_collections.teg.istio.plugins.module_utils import rollout
from ansible_collections.teg.istio.plugins.module_utils import _rollout_restart as rr

ANNOTATION = "teg.istio/restart-trigger"


def deployment(name, annotations=None, paused=False, replicas=1, generation=2, status=None):
    return {
        "metadata": {"name": name, "generation": generation},
        "spec": {"replicas": replicas, "paused": paused,
                 "template": {"metadata": {"annotations": annotations} if annotations is not None else {}}},
        "status": status or {},
    }


def rolled_out(generation=2, replicas=1, **overrides):
    status = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
              "availableReplicas": replicas, "readyReplicas": replicas,
              "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                             {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
    status.update(overrides)
    return status


class TestPlan:
    def test_no_trigger_recorded_restarts(self):
        restart, unchanged = rollout.plan_restarts([deployment("a", None)], "t1", ANNOTATION, False)
        assert restart == [{"name": "a", "reason": "no trigger recorded yet", "previous_trigger": None}]
        assert unchanged == []

    def test_changed_trigger_restarts_and_reports_previous(self):
        restart, unchanged = rollout.plan_restarts([deployment("a", {ANNOTATION: "t0"})], "t1", ANNOTATION, False)
        assert restart == [{"name": "a", "reason": "trigger changed", "previous_trigger": "t0"}]

    def test_same_trigger_skips(self):
        restart, unchanged = rollout.plan_restarts([deployment("a", {ANNOTATION: "t1", "other": "x"})], "t1", ANNOTATION, False)
        assert restart == []
        assert unchanged == [{"name": "a", "reason": "trigger unchanged"}]

    def test_force_restarts_even_with_same_trigger(self):
        restart, unchanged = rollout.plan_restarts([deployment("a", {ANNOTATION: "t1"})], "t1", ANNOTATION, True)
        assert [r["reason"] for r in restart] == ["force"]
        assert unchanged == []

    def test_other_annotation_name_is_honoured(self):
        restart, _unchanged = rollout.plan_restarts([deployment("a", {ANNOTATION: "t1"})], "t1", "example.com/hash", False)
        assert restart[0]["reason"] == "no trigger recorded yet"

    def test_order_is_kept(self):
        deps = [deployment(n, {ANNOTATION: "old"}) for n in ("z", "a", "m")]
        restart, _unchanged = rollout.plan_restarts(deps, "new", ANNOTATION, False)
        assert [r["name"] for r in restart] == ["z", "a", "m"]


class TestPaused:
    def test_paused_deployment_to_restart_is_refused_in_one_line(self):
        deps = [deployment("a", paused=True), deployment("b")]
        restart, _unchanged = rollout.plan_restarts(deps, "t", ANNOTATION, False)
        msg = rollout.paused_error(deps, restart, "ns")
        assert "\n" not in msg
        assert "a" in msg.split("in namespace")[0] and "rollout resume deployment/a" in msg
        assert "b" not in msg.split("in namespace")[0]

    def test_paused_but_unchanged_is_not_refused(self):
        deps = [deployment("a", {ANNOTATION: "t"}, paused=True)]
        restart, _unchanged = rollout.plan_restarts(deps, "t", ANNOTATION, False)
        assert rollout.paused_error(deps, restart, "ns") is None


def test_patch_sets_trigger_and_restarted_at_like_kubectl():
    patch = rr._restart_patch(ANNOTATION, "abc", "2026-11-26T13:00:00Z")
    assert patch == {"spec": {"template": {"metadata": {"annotations": {
        ANNOTATION: "abc", "kubectl.kubernetes.io/restartedAt": "2026-11-26T13:00:00Z"}}}}}


class TestRolloutState:
    def test_done(self):
        assert rollout.rollout_state(deployment("a", status=rolled_out()), 2) == ("done", "rolled out")

    def test_generation_not_observed(self):
        state, detail = rollout.rollout_state(deployment("a", generation=3, status=rolled_out(generation=2)), 3)
        assert state == "waiting" and "generation 3" in detail

    def test_newer_generation_observed_counts(self):
        assert rollout.rollout_state(deployment("a", generation=4, status=rolled_out(generation=4)), 3)[0] == "done"

    def test_not_all_updated(self):
        status = rolled_out(replicas=3, updatedReplicas=1)
        assert rollout.rollout_state(deployment("a", replicas=3, status=status), 2) == (
            "waiting", "1 of 3 replicas updated")

    def test_old_replicas_left(self):
        status = rolled_out(replicas=2)
        status["updatedReplicas"] = 1
        state, detail = rollout.rollout_state(deployment("a", replicas=1, status=status), 2)
        assert (state, detail) == ("waiting", "1 old replica(s) pending termination")

    def test_updated_not_available(self):
        status = rolled_out(availableReplicas=0)
        assert rollout.rollout_state(deployment("a", status=status), 2) == (
            "waiting", "0 of 1 updated replicas available")

    def test_missing_status_fields_wait(self):
        state, _detail = rollout.rollout_state(deployment("a", status={"observedGeneration": 2}), 2)
        assert state == "waiting"

    def test_available_condition_false_waits(self):
        status = rolled_out()
        status["conditions"][0] = {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}
        state, detail = rollout.rollout_state(deployment("a", status=status), 2)
        assert state == "waiting" and "MinimumReplicasUnavailable" in detail

    def test_progress_deadline_fails(self):
        status = rolled_out(availableReplicas=0)
        status["conditions"][1] = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                   "message": "ReplicaSet x has timed out progressing."}
        state, detail = rollout.rollout_state(deployment("a", status=status), 2)
        assert state == "failed" and "timed out progressing" in detail

    def test_deleted_fails(self):
        assert rollout.rollout_state(None, 1)[0] == "failed"

    def test_zero_replicas_is_done(self):
        status = {"observedGeneration": 2, "conditions": [{"type": "Available", "status": "True"}]}
        assert rollout.rollout_state(deployment("a", replicas=0, status=status), 2)[0] == "done"


def test_timeout_message_names_every_pending_deployment_in_one_line():
    msg = rr._timeout_message("ns", {"b": "0 of 1 updated replicas available", "a": "x"}, 30)
    assert "\n" not in msg
    assert "Deployment ns/a (x)" in msg and "Deployment ns/b (0 of 1 updated replicas available)" in msg
    assert msg.startswith("rollout not complete after 30s")


def test_summary():
    msg = rr._summary("ns", [{"name": "a"}], [{"name": "b"}], [{"name": "c"}], False, True)
    assert msg == "restarted 1 Deployment(s) in ns: a; unchanged trigger: b; not found: c; all rolled out"
    assert rr._summary("ns", [], [], [], True, False) == "nothing to restart in ns"
    assert rr._summary("ns", [{"name": "a"}], [], [], True, False).startswith("would restart")


@pytest.mark.parametrize("values,expected", [([], []), (["a", "b", "a"], ["a", "b"]), (["b", "a"], ["b", "a"])])
def test_unique_keeps_first_order(values, expected):
    assert rollout._unique(values) == expected
