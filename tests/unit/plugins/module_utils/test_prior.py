"""The record of prior values (module_utils/prior.py): what the collection changed on an object it did not create,
kept on the object, and what teardown gives back. The API side: tests/integration/test_existing_mesh.py."""

import json

import pytest
from ansible_collections.teg.istio.plugins.module_utils import prior
from ansible_collections.teg.istio.plugins.module_utils.names import TegIstioError

INJECTION = prior.pointer("metadata", "labels", "istio-injection")
REVISION = prior.pointer("metadata", "labels", "istio.io/rev")
RECORD = prior.pointer("metadata", "annotations", prior.PRIOR_ANNOTATION)


def namespace(labels=None, record=None):
    meta = {"name": "apps", "labels": dict(labels or {})}
    if record is not None:
        meta["annotations"] = {prior.PRIOR_ANNOTATION: json.dumps(record)}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def apply(obj, patch):
    """A JSON merge patch (RFC 7386) applied to obj, as the API server does."""
    out = dict(obj)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = apply(out.get(key) or {}, value)
        else:
            out[key] = value
    return out


def test_pointer_escapes_slashes_and_tildes_and_reads_back():
    assert REVISION == "/metadata/labels/istio.io~1rev"
    assert prior.segments(prior.pointer("a~b", "c/d")) == ["a~b", "c/d"]
    assert prior.value_at(namespace({"istio.io/rev": "stable"}), REVISION) == "stable"
    assert prior.value_at(namespace(), REVISION) is None


def test_a_change_records_the_prior_value_absent_included_in_the_same_patch():
    ns = namespace({"istio-injection": "disabled"})
    patch = prior.with_record(ns, {INJECTION: "enabled", REVISION: None})
    assert patch["metadata"]["labels"] == {"istio-injection": "enabled", "istio.io/rev": None}
    record = json.loads(patch["metadata"]["annotations"][prior.PRIOR_ANNOTATION])
    # istio.io/rev was absent and stays absent: nothing to give back for it.
    assert record == {INJECTION: ["disabled", "enabled"]}


def test_a_rerun_keeps_the_first_prior_and_follows_the_value_set():
    first = apply(namespace(), prior.with_record(namespace(), {INJECTION: "enabled"}))
    assert prior.recorded(first) == {INJECTION: [None, "enabled"]}
    assert prior.with_record(first, {INJECTION: "enabled"}) == {"metadata": {"labels": {"istio-injection": "enabled"}}}
    moved = apply(first, prior.with_record(first, {INJECTION: None, REVISION: "canary"}))
    # Back at its prior (absent), istio-injection needs nothing given back; the revision label does.
    assert prior.recorded(moved) == {REVISION: [None, "canary"]}


def test_an_object_the_collection_creates_gets_no_record():
    assert prior.record_annotation(None, {INJECTION: "enabled"}) is None


def test_teardown_gives_back_what_was_there_and_removes_what_was_added_then_writes_nothing():
    before = namespace({"istio-injection": "disabled", "team": "a"})
    after_site = apply(before, prior.with_record(before, {INJECTION: "enabled"}))
    added = apply(namespace(), prior.with_record(namespace(), {REVISION: "canary"}))
    after_site = apply(after_site, prior.merge_patch({REVISION: "canary"}))  # the same object, two fields
    after_site = apply(after_site, {"metadata": {"annotations": {prior.PRIOR_ANNOTATION: json.dumps(
        {INJECTION: ["disabled", "enabled"], REVISION: [None, "canary"]})}}})
    changes, left = prior.restoration(after_site)
    assert left == [] and changes == {INJECTION: "disabled", REVISION: None, RECORD: None}
    restored = apply(after_site, prior.merge_patch(changes))
    restored["metadata"].pop("annotations")
    assert restored == before
    assert prior.restoration(restored) == ({}, [])
    assert prior.restoration(added)[0] == {REVISION: None, RECORD: None}


def test_a_field_changed_since_is_left_alone_and_named():
    ns = namespace({"istio-injection": "enabled"}, record={INJECTION: [None, "enabled"], REVISION: [None, "canary"]})
    changes, left = prior.restoration(ns)
    assert left == [REVISION] and changes == {INJECTION: None, RECORD: None}


def test_one_role_restores_its_fields_and_keeps_the_others_record():
    ns = namespace({"istio-injection": "enabled", "x": "1"},
                   record={INJECTION: [None, "enabled"], prior.pointer("metadata", "labels", "x"): ["0", "1"]})
    changes, _left = prior.restoration(ns, fields=lambda field: field == INJECTION)
    assert changes[INJECTION] is None
    assert json.loads(changes[RECORD]) == {prior.pointer("metadata", "labels", "x"): ["0", "1"]}


@pytest.mark.parametrize("raw", ["not json", "[1]", '{"labels": [1, 2]}', '{"/a": [1]}'])
def test_a_record_the_collection_did_not_write_is_refused_in_one_line(raw):
    ns = namespace()
    ns["metadata"]["annotations"] = {prior.PRIOR_ANNOTATION: raw}
    with pytest.raises(TegIstioError) as err:
        prior.recorded(ns)
    assert str(err.value).startswith("Namespace apps: annotation teg.istio/prior is not the collection's record")
    assert "\n" not in str(err.value)


def test_the_summary_names_each_owners_setting_a_plan_changes_and_what_teardown_gives_back():
    ns = namespace({"istio-injection": "disabled"})
    change = dict({"apiVersion": "v1", "kind": "Namespace"}, **prior.with_record(ns, {INJECTION: "enabled"}))
    change["metadata"]["name"] = "apps"
    ours = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "made", "labels": {"x": "1"}}}
    writes = {"objects": [change, ours], "service_port": True}
    assert prior.owners_settings(writes) == [
        'Namespace apps: label istio-injection "disabled" -> "enabled" (teardown gives back "disabled")']
    after = apply(ns, prior.with_record(ns, {INJECTION: "enabled"}))
    changes, _left = prior.restoration(after)
    restore = dict({"apiVersion": "v1", "kind": "Namespace"}, **prior.merge_patch(changes))
    restore["metadata"]["name"] = "apps"
    assert prior.owners_settings({"patches": [restore]}) == ['Namespace apps: given back label istio-injection "disabled"']


def test_a_list_entry_is_selected_by_key_wherever_it_is_in_the_list():
    field = prior.pointer("spec", "ports", prior.selector("port", 18000), "appProtocol")
    assert field == "/spec/ports/[port=18000]/appProtocol"
    service = {"spec": {"ports": [{"port": 9443}, {"port": 18000, "appProtocol": "tls"}]}}
    assert prior.value_at(service, field) == "tls"
    service["spec"]["ports"].reverse()
    assert prior.value_at(service, field) == "tls"
    # No entry, or several, with that key: nothing to read (teardown then leaves the field alone).
    assert prior.value_at({"spec": {"ports": [{"port": 9443}]}}, field) is None
    twice = {"spec": {"ports": [{"port": 18000, "protocol": "TCP", "appProtocol": "tls"},
                                {"port": 18000, "protocol": "UDP", "appProtocol": "tls"}]}}
    assert prior.value_at(twice, field) is None
    assert prior.value_at(service, "/spec/ports/1/appProtocol") is None
