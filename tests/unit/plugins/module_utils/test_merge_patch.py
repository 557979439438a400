"""merge_patch_changes: when a JSON merge patch (RFC 7386) would leave an object as it is."""

import pytest
from ansible_collections.teg.istio.plugins.module_utils.merge_patch import merge_patch_changes, pending_definitions

LIVE = {
    "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
    "metadata": {"name": "default", "namespace": "istio-system", "resourceVersion": "42",
                 "labels": {"app.kubernetes.io/managed-by": "teg.istio", "team": "mesh"}},
    "spec": {"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}},
             "ports": [{"port": 80, "name": "http"}], "enabled": True},
}


@pytest.mark.parametrize("patch", [
    {},
    {"spec": {"mtls": {"mode": "STRICT"}}},
    {"metadata": {"name": "default", "labels": {"app.kubernetes.io/managed-by": "teg.istio"}}},
    {"spec": {"ports": [{"port": 80, "name": "http"}]}},
    {"spec": {"absent": None}},
    {"spec": {"enabled": True}},
    LIVE,
])
def test_patches_that_change_nothing(patch):
    assert merge_patch_changes(LIVE, patch) is False


@pytest.mark.parametrize("patch", [
    {"spec": {"mtls": {"mode": "PERMISSIVE"}}},
    {"spec": {"portLevelMtls": None}},  # null deletes
    {"metadata": {"labels": {"owner": "x"}}},  # a key the object lacks
    {"spec": {"ports": [{"port": 80}]}},  # a list is replaced whole, not merged
    {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 81}]}},
    {"spec": {"ports": [{"port": "80", "name": "http"}]}},  # the string "80" is not the integer 80
    {"spec": {"enabled": 1}},  # nor is 1 the boolean true
    {"spec": "STRICT"},  # a scalar replaces a map
    {"spec": {"mtls": {"mode": {"nested": 1}}}},  # a map replaces a scalar
])
def test_patches_that_change_something(patch):
    assert merge_patch_changes(LIVE, patch) is True


def test_numbers_compare_by_value():
    assert merge_patch_changes({"weight": 1.0}, {"weight": 1}) is False


def test_pending_definitions_are_the_absent_and_the_differing():
    in_place = {"kind": "PeerAuthentication", "metadata": {"name": "default", "namespace": "istio-system"},
                "spec": {"mtls": {"mode": "STRICT"}}}
    differing = {"kind": "PeerAuthentication", "metadata": {"name": "apps", "namespace": "apps"},
                 "spec": {"mtls": {"mode": "STRICT"}}}
    absent = {"kind": "PeerAuthentication", "metadata": {"name": "new", "namespace": "apps"}, "spec": {}}
    other_kind = {"kind": "VirtualService", "metadata": {"name": "default", "namespace": "istio-system"},
                  "spec": {"mtls": {"mode": "STRICT"}}}
    live = [LIVE, {"kind": "PeerAuthentication", "metadata": {"name": "apps", "namespace": "apps"},
                   "spec": {"mtls": {"mode": "PERMISSIVE"}}}]
    assert pending_definitions([in_place, differing, absent, other_kind], live) == [differing, absent, other_kind]
    assert pending_definitions([], live) == [] and pending_definitions([in_place], None) == [in_place]


class _TaggedStr(str):
    """Stands in for the str, dict and list subclasses Ansible passes to filters (tagged, lazy)."""


class _LazyDict(dict):
    pass


class _LazyList(list):
    pass


def test_ansibles_own_subclasses_compare_as_the_json_values_they_are():
    live = {"metadata": {"labels": {"team": "mesh"}}, "spec": {"mtls": {"mode": "STRICT"}, "ports": [80]}}
    patch = _LazyDict(metadata=_LazyDict(labels=_LazyDict(team=_TaggedStr("mesh"))),
                      spec=_LazyDict(mtls=_LazyDict(mode=_TaggedStr("STRICT")), ports=_LazyList([80])))
    assert merge_patch_changes(live, patch) is False
    assert merge_patch_changes(live, _LazyDict(spec=_LazyDict(mtls=_LazyDict(mode=_TaggedStr("DISABLE"))))) is True
