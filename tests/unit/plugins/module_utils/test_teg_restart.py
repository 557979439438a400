"""restart_pending (module_utils/_teg_restart/plan.py): the role starts rollout_restart only when the
module would restart or wait for something. The restarts themselves are covered by
tests/integration/test_teg_restart.py."""

from ansible_collections.teg.istio.plugins.module_utils._teg_restart.plan import restart_pending, trigger

TRIGGER = "abc"


def deployment(name, trigger=TRIGGER, generation=2, observed=2, replicas=1, updated=1, available=1, total=1):
    annotations = {"teg.istio/restart-trigger": trigger} if trigger is not None else {}
    return {"metadata": {"name": name, "generation": generation},
            "spec": {"replicas": replicas, "template": {"metadata": {"annotations": annotations}}},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available,
                       "replicas": total, "conditions": [{"type": "Available", "status": "True"}]}}


NAMES = ["envoy-gateway", "teg-redis"]
SETTLED = [deployment("envoy-gateway"), deployment("teg-redis"), deployment("unrelated", trigger=None)]


def test_nothing_to_do_when_every_deployment_carries_the_trigger_and_is_rolled_out():
    assert restart_pending(SETTLED, NAMES, None, TRIGGER) is False
    assert restart_pending(SETTLED, NAMES, [deployment("envoy-apps")], TRIGGER) is False


def test_a_new_trigger_or_none_recorded_or_force_needs_the_module():
    assert restart_pending(SETTLED, NAMES, None, "other") is True
    assert restart_pending(SETTLED, NAMES, [deployment("envoy-apps", trigger=None)], TRIGGER) is True
    assert restart_pending(SETTLED, NAMES, None, TRIGGER, force=True) is True


def test_a_rollout_still_in_progress_needs_the_module_to_wait_unless_wait_is_off():
    stuck = [deployment("envoy-gateway"), deployment("teg-redis", available=0)]
    assert restart_pending(stuck, NAMES, None, TRIGGER) is True
    assert restart_pending(stuck, NAMES, None, TRIGGER, wait=False) is False
    unobserved = [deployment("envoy-gateway", observed=1), deployment("teg-redis")]
    assert restart_pending(unobserved, NAMES, None, TRIGGER) is True


def test_a_missing_deployment_or_nothing_selected_leaves_the_reporting_to_the_module():
    assert restart_pending(SETTLED, NAMES + ["envoy-ratelimit"], None, TRIGGER) is True
    assert restart_pending([], [], [], TRIGGER) is True


def test_the_trigger_is_the_hash_the_role_computed_before():
    # {...} | to_json(sort_keys=true) | hash('sha256') of the earlier YAML, for the settings of a prepared
    # namespace, the empty includeInboundPorts and istiod 1.29.6: an upgrade of the collection restarts nothing.
    import hashlib
    text = ('{"includeInboundPorts": "", "injection": {"istio-injection": "enabled", "istio.io/rev": null}, '
            '"istiod": {"revision": "default", "version": "1.29.6"}}')
    assert trigger({"istio-injection": "enabled"}, "", {"revision": "default", "version": "1.29.6"}) == \
        hashlib.sha256(text.encode()).hexdigest()
    assert trigger({}, None, None) != trigger({}, "", None)
