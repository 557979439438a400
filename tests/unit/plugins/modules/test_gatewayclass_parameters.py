"""Pure logic of teg.istio.gatewayclass_parameters: the merge patch that points a GatewayClass at an
EnvoyProxy and records what it replaced (module_utils/prior.py), and the one that takes it back, also from the
annotations of the version before the record. Patches are applied here by
RFC 7386 (JSON merge patch, what the API server does for application/merge-patch+json) to show the
round trip ends where it started."""

import copy
import json

import pytest

from ansible_collections.teg.istio.plugins.module_utils.cluster import TegIstioError
from ansible_collections.teg.istio.plugins.module_utils import _gatewayclass_parameters as gp
from ansible_collections.teg.istio.plugins.module_utils.merge_patch import apply_merge_patch

NS = "envoy-gateway-system"
PRIOR = "teg.istio/prior"
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


def record(gc):
    return json.loads(gc["metadata"]["annotations"][PRIOR])


def test_pointing_a_class_without_reference_records_its_absence():
    gc = gatewayclass()
    after = apply(gc, gp._present_patch(gc, LEGACY))
    assert after["spec"]["parametersRef"] == LEGACY
    assert record(after) == {"/spec/parametersRef": [None, LEGACY]}
    assert after["metadata"]["annotations"]["meta.helm.sh/release-name"] == "teg"


def test_replacing_tegs_reference_records_it():
    after = apply(gatewayclass(TEG_REF), gp._present_patch(gatewayclass(TEG_REF), OURS))
    assert after["spec"]["parametersRef"] == OURS
    assert record(after) == {"/spec/parametersRef": [TEG_REF, OURS]}


def test_the_same_reference_needs_no_patch():
    assert gp._present_patch(gatewayclass(dict(OURS)), OURS) is None


def test_a_second_replacement_keeps_the_original_as_prior():
    first = apply(gatewayclass(TEG_REF), gp._present_patch(gatewayclass(TEG_REF), OURS))
    other = dict(OURS, name="sidecars-b")
    second = apply(first, gp._present_patch(first, other))
    assert second["spec"]["parametersRef"] == other
    assert record(second) == {"/spec/parametersRef": [TEG_REF, other]}


@pytest.mark.parametrize("original", [TEG_REF, None], ids=["teg-reference", "no-reference"])
def test_absent_after_present_ends_where_it_started(original):
    start = gatewayclass(original)
    present = apply(start, gp._present_patch(start, OURS))
    patch, reason = gp._absent_patch(present)
    back = apply(present, patch)
    assert back == start
    assert reason == ("restored " + gp._ref_string(TEG_REF) if original else "removed parametersRef")
    assert gp._absent_patch(back) == (None, "has no reference set by teg.istio; left alone")


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
    # Someone (e.g. `helm upgrade`) put another reference back after ours: the reference stays, the record goes.
    present = apply(gatewayclass(TEG_REF), gp._present_patch(gatewayclass(TEG_REF), OURS))
    present["spec"]["parametersRef"] = dict(TEG_REF, name="helms")
    patch, reason = gp._absent_patch(present)
    assert reason.startswith("references " + gp._ref_string(dict(TEG_REF, name="helms")))
    after = apply(present, patch)
    assert after["spec"]["parametersRef"] == dict(TEG_REF, name="helms") and PRIOR not in after["metadata"]["annotations"]


# GatewayClasses pointed by a version before the record of prior values carry its two annotations.
def legacy_pointed(original):
    annotations = {gp.SET_ANNOTATION: gp._ref_string(OURS)}
    if original:
        annotations[gp.PREVIOUS_ANNOTATION] = json.dumps(original, sort_keys=True)
    return gatewayclass(OURS, annotations)


@pytest.mark.parametrize("original", [TEG_REF, None], ids=["teg-reference", "no-reference"])
def test_a_class_pointed_by_the_previous_version_is_given_back_and_loses_its_annotations(original):
    pointed = legacy_pointed(original)
    patch, reason = gp._absent_patch(pointed)
    assert apply(pointed, patch) == gatewayclass(original)
    assert reason == ("restored " + gp._ref_string(TEG_REF) if original else "removed parametersRef")
    assert gp.ref_after_absent(pointed) == (gp._whole(original), True)
    # Moved since by someone else: the reference stays, the old annotations go.
    moved = legacy_pointed(original)
    moved["spec"]["parametersRef"] = dict(TEG_REF, name="helms")
    patch, reason = gp._absent_patch(moved)
    assert apply(moved, patch) == gatewayclass(dict(TEG_REF, name="helms"))
    assert reason.startswith("references ") and reason.endswith("; left alone")


def test_a_class_pointed_by_the_previous_version_and_pointed_again_keeps_the_first_prior():
    pointed = legacy_pointed(TEG_REF)
    other = dict(OURS, name="sidecars-b")
    again = apply(pointed, gp._present_patch(pointed, other))
    assert record(again) == {"/spec/parametersRef": [TEG_REF, other]}
    assert not {gp.SET_ANNOTATION, gp.PREVIOUS_ANNOTATION} & set(again["metadata"]["annotations"])
    patch, _reason = gp._absent_patch(again)
    assert apply(again, patch) == gatewayclass(TEG_REF)


def test_a_broken_previous_annotation_is_reported():
    gc = gatewayclass(OURS, {gp.SET_ANNOTATION: gp._ref_string(OURS), gp.PREVIOUS_ANNOTATION: "{not json"})
    with pytest.raises(TegIstioError, match="is not JSON"):
        gp._absent_patch(gc)
