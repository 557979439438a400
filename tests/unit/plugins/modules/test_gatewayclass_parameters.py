"""Pure logic of teg.istio.gatewayclass_parameters: the merge patch that points a GatewayClass at an
EnvoyProxy and records what it replaced, and the one that takes it back. Patches are applied here by
RFC 7386 (JSON merge patch, what the API server does for application/merge-patch+json) to show the
round trip ends where it started."""

import copy
import json

import pytest

from ansible_collections.teg.istio.plugins.module_utils.cluster import TegIstioError
from ansible_collections.teg.istio.plugins.module_utils import _gatewayclass_parameters as gp
from ansible_collections.teg.istio.plugins.module_utils.merge_patch import apply_merge_patch

NS = "envoy-gateway-system"
TEG_REF = {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "teg-envoy-proxy", "namespace": NS}
OURS = {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "data-plane-sidecars", "namespace": NS}
LEGACY = {"group": "config.gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "data-plane-sidecars",
          "namespace": NS}


def gatewayclass(ref=None, annotations=None):
    gc = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
          "metadata": {"name": "teg", "resourceVersion": "7",
                       "annotations": dict({"meta.helm.sh/release-name": "teg"}, **(annotations or {}))},
          "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"}}
    if ref:
        gc["spec"]["parametersRef"] = dict(ref)
    return gc


def apply(gc, patch):
    patch = copy.deepcopy(patch)
    assert patch["metadata"].pop("resourceVersion") == gc["metadata"]["resourceVersion"]
    return apply_merge_patch(gc, patch)


def test_pointing_a_class_without_reference_records_no_previous_one():
    gc = gatewayclass()
    patch = gp._present_patch(gc, LEGACY)
    after = apply(gc, patch)
    assert after["spec"]["parametersRef"] == LEGACY
    assert after["metadata"]["annotations"][gp.SET_ANNOTATION] == \
        "config.gateway.envoyproxy.io/EnvoyProxy/" + NS + "/data-plane-sidecars"
    assert gp.PREVIOUS_ANNOTATION not in after["metadata"]["annotations"]
    assert after["metadata"]["annotations"]["meta.helm.sh/release-name"] == "teg"


def test_replacing_tegs_reference_records_it():
    after = apply(gatewayclass(TEG_REF), gp._present_patch(gatewayclass(TEG_REF), OURS))
    assert after["spec"]["parametersRef"] == OURS
    assert json.loads(after["metadata"]["annotations"][gp.PREVIOUS_ANNOTATION]) == TEG_REF


def test_the_same_reference_needs_no_patch():
    assert gp._present_patch(gatewayclass(dict(OURS)), OURS) is None


def test_a_second_replacement_keeps_the_original_as_previous():
    first = apply(gatewayclass(TEG_REF), gp._present_patch(gatewayclass(TEG_REF), OURS))
    other = dict(OURS, name="sidecars-b")
    second = apply(first, gp._present_patch(first, other))
    assert second["spec"]["parametersRef"] == other
    assert json.loads(second["metadata"]["annotations"][gp.PREVIOUS_ANNOTATION]) == TEG_REF


@pytest.mark.parametrize("original", [TEG_REF, None], ids=["teg-reference", "no-reference"])
def test_absent_after_present_ends_where_it_started(original):
    start = gatewayclass(original)
    present = apply(start, gp._present_patch(start, OURS))
    patch, reason = gp._absent_patch(present)
    back = apply(present, patch)
    assert back == start
    assert reason == ("restored " + gp._ref_string(TEG_REF) if original else "removed parametersRef")


def test_absent_restores_every_key_of_the_previous_reference():
    # A previous reference without namespace must not keep ours.
    no_ns = {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "p"}
    start = gatewayclass(no_ns)
    present = apply(start, gp._present_patch(start, OURS))
    patch, _reason = gp._absent_patch(present)
    assert apply(present, patch)["spec"]["parametersRef"] == no_ns


def test_absent_leaves_a_reference_it_did_not_set_alone():
    patch, reason = gp._absent_patch(gatewayclass(TEG_REF))
    assert patch is None and reason == "has no reference set by teg.istio; left alone"
    # Someone (e.g. `helm upgrade`) put another reference back after ours.
    moved = gatewayclass(TEG_REF, {gp.SET_ANNOTATION: gp._ref_string(OURS)})
    patch, reason = gp._absent_patch(moved)
    assert patch is None and reason.startswith("references " + gp._ref_string(TEG_REF))


def test_a_broken_previous_annotation_is_reported():
    gc = gatewayclass(OURS, {gp.SET_ANNOTATION: gp._ref_string(OURS), gp.PREVIOUS_ANNOTATION: "{not json"})
    with pytest.raises(TegIstioError, match="is not JSON"):
        gp._absent_patch(gc)
