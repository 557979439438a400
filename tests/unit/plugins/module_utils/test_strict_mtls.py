"""Pure logic of the strict_mtls role (module_utils/_strict_mtls/): the PeerAuthentications, where
STRICT reaches, which pods it would cut off, and what to write or prune. The API side is covered by
tests/integration/test_strict_mtls.py."""

import pytest
from ansible_collections.teg.istio.plugins.module_utils import _diffs
from ansible_collections.teg.istio.plugins.module_utils._strict_mtls import plan as sp
from ansible_collections.teg.istio.plugins.module_utils._strict_mtls import policies as sm
from ansible_collections.teg.istio.plugins.module_utils.merge_patch import apply_merge_patch, pending_definitions
from ansible_collections.teg.istio.plugins.module_utils.names import TegIstioError

V1 = "security.istio.io/v1"
LABELS = {"app.kubernetes.io/managed-by": "teg.istio"}


def pod(namespace, name, containers=("app",), init=(), phase="Running", restart_policy=None):
    init_containers = [dict({"name": n}, **({"restartPolicy": restart_policy} if restart_policy else {})) for n in init]
    return {"metadata": {"namespace": namespace, "name": name},
            "spec": {"containers": [{"name": n} for n in containers], "initContainers": init_containers},
            "status": {"phase": phase}}


class TestPolicies:
    def test_mesh_wide_default_only(self):
        assert sm.definitions([], "istio-system", "STRICT", V1) == [{
            "apiVersion": V1, "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "istio-system", "labels": LABELS},
            "spec": {"mtls": {"mode": "STRICT"}, "selector": None, "portLevelMtls": None},
        }]

    def test_namespace_policies_default_name_and_mode(self):
        out = sm.definitions([{"namespace": "apps"}], "istio-system", "PERMISSIVE", "security.istio.io/v1beta1")
        assert [(d["metadata"]["namespace"], d["metadata"]["name"], d["spec"]["mtls"]["mode"]) for d in out] == [
            ("istio-system", "default", "PERMISSIVE"), ("apps", "default", "STRICT")]
        assert {d["apiVersion"] for d in out} == {"security.istio.io/v1beta1"}

    def test_selector_and_ports_normalised(self):
        out = sm.definitions([{"namespace": "apps", "name": "metrics", "mode": "STRICT",
                               "selector": {"app": "httpbin"},
                               "port_level_mtls": {"9443": "PERMISSIVE", 80: "DISABLE"}}],
                             "istio-system", "STRICT", V1)
        spec = out[1]["spec"]
        assert spec["selector"] == {"matchLabels": {"app": "httpbin"}}
        assert spec["portLevelMtls"] == {"80": {"mode": "DISABLE"}, "9443": {"mode": "PERMISSIVE"}}
        assert list(spec["portLevelMtls"]) == ["80", "9443"]

    def test_no_api_version_is_an_error(self):
        with pytest.raises(TegIstioError):
            sm.definitions([], "istio-system", "STRICT", None)


class TestErrors:
    def test_valid(self):
        assert sm.declaration_errors([{"namespace": "apps"},
                                      {"namespace": "apps", "name": "w", "selector": {"a": "b"},
                                       "port_level_mtls": {8080: "DISABLE"}}], "istio-system") == []

    def test_duplicate(self):
        errors = sm.declaration_errors([{"namespace": "apps"}, {"namespace": "apps", "name": "default"}], "istio-system")
        assert errors == ["strict_mtls_namespace_policies entry apps/default is declared twice: keep one"]

    def test_second_mesh_wide_policy(self):
        errors = sm.declaration_errors([{"namespace": "istio-system", "name": "other"}], "istio-system")
        assert len(errors) == 1 and "second mesh-wide policy" in errors[0]

    def test_root_namespace_with_selector_is_fine(self):
        assert sm.declaration_errors([{"namespace": "istio-system", "name": "w", "selector": {"app": "x"}}],
                                     "istio-system") == []

    def test_ports_need_selector(self):
        errors = sm.declaration_errors([{"namespace": "apps", "port_level_mtls": {"80": "DISABLE"}}], "istio-system")
        assert len(errors) == 1 and "without a selector" in errors[0]

    @pytest.mark.parametrize("port", ["0", "70000", "http", None])
    def test_bad_port(self, port):
        errors = sm.declaration_errors([{"namespace": "a", "selector": {"x": "y"}, "port_level_mtls": {port: "STRICT"}}],
                                       "istio-system")
        assert len(errors) == 1 and "not a port number" in errors[0]

    def test_bad_port_mode(self):
        errors = sm.declaration_errors([{"namespace": "a", "selector": {"x": "y"}, "port_level_mtls": {"80": "strict"}}],
                                       "istio-system")
        assert len(errors) == 1 and "is not one of STRICT" in errors[0]

    def test_every_error_is_one_line(self):
        errors = sm.declaration_errors([{"namespace": "istio-system", "name": "x", "port_level_mtls": {"a": "b"}}] * 2,
                                       "istio-system")
        assert len(errors) >= 4 and all("\n" not in e for e in errors)


class TestCheckNamespaces:
    def test_mesh_wide_strict_checks_mesh_namespaces(self):
        assert sm.check_namespaces(["teg", "apps"], [], "STRICT") == ["apps", "teg"]

    @pytest.mark.parametrize("mode", ["PERMISSIVE", "DISABLE", "UNSET"])
    def test_not_strict_checks_nothing(self, mode):
        assert sm.check_namespaces(["teg", "apps"], [], mode) == []

    def test_strict_namespace_policy_is_checked_when_mesh_is_permissive(self):
        policies = [{"namespace": "apps", "mode": "STRICT"}, {"namespace": "other", "mode": "PERMISSIVE"}]
        assert sm.check_namespaces(["teg"], policies, "PERMISSIVE") == ["apps"]

    def test_permissive_namespace_policy_exempts_its_namespace(self):
        policies = [{"namespace": "legacy", "mode": "PERMISSIVE"}]
        assert sm.check_namespaces(["teg", "legacy"], policies, "STRICT") == ["teg"]

    def test_unset_namespace_policy_inherits(self):
        assert sm.check_namespaces([], [{"namespace": "x", "mode": "UNSET"}], "STRICT") == ["x"]
        assert sm.check_namespaces([], [{"namespace": "x", "mode": "UNSET"}], "PERMISSIVE") == []

    def test_policy_mode_defaults_to_strict(self):
        assert sm.check_namespaces([], [{"namespace": "x"}], "PERMISSIVE") == ["x"]

    def test_strict_selector_policy_checks_namespace_even_if_namespace_is_permissive(self):
        policies = [{"namespace": "legacy", "mode": "PERMISSIVE"},
                    {"namespace": "legacy", "name": "db", "mode": "STRICT", "selector": {"app": "db"}}]
        assert sm.check_namespaces([], policies, "STRICT") == ["legacy"]


class TestUnmeshed:
    def test_lists_pods_without_istio_proxy_sorted(self):
        pods = [pod("b", "p2"), pod("a", "p1"), pod("a", "meshed", containers=("app", "istio-proxy"))]
        assert sm.unmeshed_pods(pods) == ["a/p1", "b/p2"]

    def test_native_sidecar_counts(self):
        pods = [pod("a", "native", init=("istio-validation", "istio-proxy"), restart_policy="Always")]
        assert sm.unmeshed_pods(pods) == []

    def test_istio_init_alone_does_not_count(self):
        assert sm.unmeshed_pods([pod("a", "half", init=("istio-init",))]) == ["a/half"]

    @pytest.mark.parametrize("phase,listed", [("Succeeded", False), ("Failed", False), ("Pending", True), (None, True)])
    def test_finished_pods_are_left_out(self, phase, listed):
        assert sm.unmeshed_pods([pod("a", "p", phase=phase)]) == (["a/p"] if listed else [])

    def test_pods_being_deleted_are_left_out(self):
        leaving = pod("a", "old")
        leaving["metadata"]["deletionTimestamp"] = "2026-12-05T10:29:20Z"
        assert sm.unmeshed_pods([leaving, pod("a", "new")]) == ["a/new"]

    def test_empty(self):
        assert sm.unmeshed_pods([]) == [] and sm.unmeshed_pods(None) == []


class TestChanged:
    """What the server-side dry run (ClusterView.dry_run: one kubernetes.core result per definition) found
    different: only those are written."""
    defs = [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]

    @pytest.mark.parametrize("result,changed", [
        ({"changed": True, "method": "create", "result": {}}, True),
        ({"changed": True, "method": "update", "diff": {"before": {"spec": {"mtls": {"mode": "PERMISSIVE"}}},
                                                        "after": {"spec": {"mtls": {"mode": "STRICT"}}}}}, True),
        ({"changed": False, "method": "update", "diff": {}}, False),
        # A status update by a controller between the read and the dry run is not a change of ours.
        ({"changed": True, "method": "update", "diff": {"before": {"status": {"a": 1}}, "after": {"status": {"a": 2}}}},
         False),
    ])
    def test_each_result_decides(self, result, changed):
        assert _diffs.changed_definitions(self.defs[:1], [result]) == (self.defs[:1] if changed else [])

    def test_a_mismatch_is_an_error(self):
        with pytest.raises(ValueError):
            _diffs.changed_definitions(self.defs, [{"changed": True}])


def _as_read(definition, **spec):
    """A definition as the API server returns it after create: nulls dropped, bookkeeping added."""
    meta = dict(definition["metadata"], uid="u", resourceVersion="7", generation=1)
    return {"apiVersion": definition["apiVersion"], "kind": "PeerAuthentication", "metadata": meta,
            "spec": dict({"mtls": definition["spec"]["mtls"]}, **spec)}


class TestPending:
    declared = sm.definitions([{"namespace": "apps", "name": "metrics", "selector": {"app": "m"},
                                "port_level_mtls": {9443: "PERMISSIVE"}}], "istio-system", "STRICT", V1)

    def test_policies_read_as_declared_are_in_place(self):
        mesh, metrics = self.declared
        found = [_as_read(mesh), _as_read(metrics, selector=metrics["spec"]["selector"],
                                          portLevelMtls=metrics["spec"]["portLevelMtls"])]
        assert pending_definitions(self.declared, found) == []

    def test_absent_changed_or_carrying_a_field_no_longer_declared_are_pending(self):
        mesh, metrics = self.declared
        permissive = _as_read(mesh)
        permissive["spec"]["mtls"] = {"mode": "PERMISSIVE"}
        assert pending_definitions(self.declared, [permissive]) == self.declared
        # A selector an earlier run declared is removed by the explicit null of the definition.
        with_selector = _as_read(mesh, selector={"matchLabels": {"app": "old"}})
        assert pending_definitions(self.declared[:1], [with_selector]) == [mesh]


def test_stale_keeps_only_ours_not_declared():
    found = [
        {"apiVersion": V1, "metadata": {"namespace": "istio-system", "name": "default", "labels": LABELS}},
        {"apiVersion": V1, "metadata": {"namespace": "apps", "name": "default", "labels": LABELS}},
        {"apiVersion": V1, "metadata": {"namespace": "apps", "name": "theirs", "labels": {}}},
    ]
    declared = sm.definitions([], "istio-system", "STRICT", V1)
    assert sm.stale_policies(found, declared) == [
        {"apiVersion": V1, "kind": "PeerAuthentication", "metadata": {"name": "default", "namespace": "apps"}}]
    assert [o["metadata"]["namespace"] for o in sm.stale_policies(found, [])] == ["apps", "istio-system"]


def test_the_reads_are_every_policy_then_namespaces_then_pods_of_each_reached_namespace():
    reads = sp.reads({"state": "present"}, ["httpbin", "envoy-gateway-system"])
    # Not only the collection's: the owners' are adopted, restored and reported.
    assert reads["policies"] == {"kind": "PeerAuthentication"}
    assert reads["namespaces"] == {"kind": "Namespace", "api_version": "v1"}
    assert [(r["kind"], r["namespace"]) for k, r in reads.items() if k.startswith("pods in ")] == [
        ("Pod", "httpbin"), ("Pod", "envoy-gateway-system")]


def test_teardown_reads_only_the_policies():
    assert list(sp.reads({"state": "absent"}, ["httpbin"])) == ["policies"]


def test_pods_a_role_before_restarts_are_not_counted_as_cut_off():
    owned = pod("envoy-gateway-system", "envoy-gateway-5d8f-abcde")
    owned["metadata"]["labels"] = {"pod-template-hash": "5d8f"}
    owned["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "envoy-gateway-5d8f"}]
    plain = pod("envoy-gateway-system", "by-hand")
    kept = sp._not_restarted([owned, plain], {"restarted": {"envoy-gateway-system": ["envoy-gateway"]}})
    assert kept == [plain]
    assert sp._not_restarted([owned, plain], {}) == [owned, plain]


def _theirs(name, namespace, mode=None, created="2026-01-01T00:00:00Z", selector=None, ports=None, **meta):
    spec = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = dict((p, {"mode": m}) for p, m in ports.items())
    return {"apiVersion": V1, "kind": "PeerAuthentication",
            "metadata": dict({"name": name, "namespace": namespace, "creationTimestamp": created}, **meta), "spec": spec}


class TestOwnersPolicies:
    """The owners' policies (not labelled) are never taken over: patched with a record of their prior values, or
    left as they are when already as declared; given back on teardown."""
    declared = sm.definitions([], "istio-system", "STRICT", V1)

    def test_no_policy_there_the_collection_creates_its_own(self):
        assert sm.adopt_owners(self.declared, [], "istio-system") == (self.declared, [], [])

    def test_the_owners_mesh_wide_strict_is_left_as_it_is(self):
        theirs = _theirs("default", "istio-system", "STRICT")
        definitions, patches, kept = sm.adopt_owners(self.declared, [theirs], "istio-system")
        assert definitions == [] and patches == []
        assert kept == ["PeerAuthentication istio-system/default, the owners' mesh-wide policy, is already STRICT: "
                        "left as it is"]

    @pytest.mark.parametrize("mode, record", [
        ("PERMISSIVE", '{"/spec/mtls/mode":["PERMISSIVE","STRICT"]}'),
        ("DISABLE", '{"/spec/mtls/mode":["DISABLE","STRICT"]}'),
        ("UNSET", '{"/spec/mtls/mode":["UNSET","STRICT"]}'),
        # No spec.mtls at all: recorded as absent, so teardown removes it rather than leave `mtls: {}`.
        (None, '{"/spec/mtls":[null,{"mode":"STRICT"}]}'),
    ])
    def test_the_owners_mesh_wide_not_strict_is_switched_with_its_prior_mode_recorded(self, mode, record):
        theirs = _theirs("default", "istio-system", mode, labels={"team": "platform"})
        definitions, patches, kept = sm.adopt_owners(self.declared, [theirs], "istio-system")
        assert definitions == [] and kept == []
        assert patches == [{
            "apiVersion": V1, "kind": "PeerAuthentication",
            # No label of ours: teardown gives it back rather than deleting it.
            "metadata": {"name": "default", "namespace": "istio-system", "annotations": {"teg.istio/prior": record}},
            "spec": {"mtls": {"mode": "STRICT"}}}]
        after = _applied(theirs, patches[0])
        assert sm.adopt_owners(self.declared, [after], "istio-system")[:2] == ([], [])
        (back,), left = sm.restorations([after])
        assert left == [] and _applied(after, back) == theirs

    def test_a_mode_changed_again_by_a_later_run_is_still_given_back_once(self):
        theirs = _theirs("default", "istio-system")
        _unused, (patch,), _unused = sm.adopt_owners(self.declared, [theirs], "istio-system")
        after = _applied(theirs, patch)
        permissive = sm.definitions([], "istio-system", "PERMISSIVE", V1)
        _unused, (again,), _unused = sm.adopt_owners(permissive, [after], "istio-system")
        assert again["metadata"]["annotations"] == {"teg.istio/prior": '{"/spec/mtls":[null,{"mode":"PERMISSIVE"}]}'}
        later = _applied(after, again)
        (back,), left = sm.restorations([later])
        assert left == [] and _applied(later, back) == theirs

    def test_the_oldest_selector_less_policy_of_the_root_namespace_is_the_mesh_wide_one(self):
        older = _theirs("mesh", "istio-system", "PERMISSIVE", created="2025-06-01T00:00:00Z")
        newer = _theirs("default", "istio-system", "STRICT")
        workload = _theirs("gw", "istio-system", "DISABLE", created="2024-01-01T00:00:00Z", selector={"app": "gw"})
        _unused, patches, kept = sm.adopt_owners(self.declared, [newer, workload, older], "istio-system")
        assert [p["metadata"]["name"] for p in patches] == ["mesh"] and kept == []

    def test_the_collection_s_own_default_is_updated_as_before_and_pruned_when_an_older_owners_one_wins(self):
        mine = _theirs("default", "istio-system", "PERMISSIVE", labels=LABELS)
        assert sm.adopt_owners(self.declared, [mine], "istio-system") == (self.declared, [], [])
        older = _theirs("mesh", "istio-system", "STRICT", created="2025-06-01T00:00:00Z")
        definitions, patches, kept = sm.adopt_owners(self.declared, [mine, older], "istio-system")
        assert definitions == [] and patches == [] and len(kept) == 1
        assert [o["metadata"]["name"] for o in sm.stale_policies([mine, older], definitions)] == ["default"]

    def test_a_declared_namespace_policy_named_as_one_of_the_owners_patches_only_what_differs(self):
        declared = sm.definitions([{"namespace": "apps", "name": "metrics", "mode": "STRICT",
                                    "selector": {"app": "httpbin"}, "port_level_mtls": {"9090": "DISABLE"}}],
                                  "istio-system", "STRICT", V1)[1:]
        theirs = _theirs("metrics", "apps", "STRICT", selector={"app": "httpbin", "tier": "web"},
                         ports={"8080": "PERMISSIVE"})
        _unused, (patch,), _unused = sm.adopt_owners(declared, [theirs], "istio-system")
        assert patch["spec"] == {"selector": {"matchLabels": {"tier": None}},
                                 "portLevelMtls": {"8080": None, "9090": {"mode": "DISABLE"}}}
        assert "labels" not in patch["metadata"]
        # Given back on teardown exactly: the label and the port it had, without the port it did not.
        after = _applied(theirs, patch)
        (back,), left = sm.restorations([after])
        assert left == []
        assert _applied(after, back) == theirs

    def test_rerun_writes_nothing_once_switched(self):
        theirs = _theirs("default", "istio-system", "PERMISSIVE")
        _unused, (patch,), _unused = sm.adopt_owners(self.declared, [theirs], "istio-system")
        after = _applied(theirs, patch)
        definitions, patches, kept = sm.adopt_owners(self.declared, [after], "istio-system")
        assert (definitions, patches) == ([], [])
        # The record stays until teardown, which gives PERMISSIVE back and removes it.
        (back,), left = sm.restorations([after])
        assert left == [] and _applied(after, back) == theirs
        assert sm.restorations([theirs]) == ([], [])

    def test_teardown_leaves_a_mode_changed_since_and_says_so(self):
        theirs = _theirs("default", "istio-system", "PERMISSIVE")
        _unused, (patch,), _unused = sm.adopt_owners(self.declared, [theirs], "istio-system")
        after = _applied(theirs, patch)
        after["spec"]["mtls"]["mode"] = "DISABLE"
        (back,), left = sm.restorations([after])
        assert left == ["PeerAuthentication istio-system/default: /spec/mtls/mode was changed since teg.istio set it, "
                        "so it is left as it is"]
        assert _applied(after, back)["spec"] == {"mtls": {"mode": "DISABLE"}}
        assert "annotations" not in _applied(after, back)["metadata"]

    def test_teardown_never_restores_the_collection_s_own(self):
        mine = _theirs("default", "istio-system", "STRICT", labels=LABELS,
                       annotations={"teg.istio/prior": '{"/spec/mtls/mode":["PERMISSIVE","STRICT"]}'})
        assert sm.restorations([mine]) == ([], [])


def _applied(obj, patch):
    """`obj` once the merge patch `patch` is applied, with empty annotations dropped as the API server does."""
    out = apply_merge_patch(obj, dict((k, v) for k, v in patch.items() if k not in ("apiVersion", "kind")))
    if out["metadata"].get("annotations") == {}:
        del out["metadata"]["annotations"]
    return out


class TestPermissiveExceptions:
    mesh = ["envoy-gateway-system", "apps"]

    def test_narrower_policies_that_keep_traffic_permissive_are_named(self):
        found = [
            _theirs("default", "istio-system", "STRICT"),
            _theirs("lenient", "apps", "PERMISSIVE"),
            _theirs("newer", "apps", "DISABLE", created="2026-02-01T00:00:00Z"),  # ignored by Istio: not the oldest
            _theirs("metrics", "apps", "UNSET", selector={"app": "httpbin"}, ports={"9090": "DISABLE", "80": "STRICT"}),
            _theirs("webhook", "envoy-gateway-system", "DISABLE", selector={"control-plane": "envoy-gateway"}),
            _theirs("strict", "envoy-gateway-system", "STRICT"),
            _theirs("elsewhere", "other", "PERMISSIVE"),
        ]
        assert sm.permissive_exceptions(found, self.mesh, "istio-system") == [
            "apps/lenient (namespace-wide PERMISSIVE)",
            "apps/metrics (workload app=httpbin port 9090 DISABLE)",
            "envoy-gateway-system/webhook (workload control-plane=envoy-gateway DISABLE)"]

    def test_declared_ones_and_the_mesh_wide_one_are_not_exceptions(self):
        found = [_theirs("default", "istio-system", "PERMISSIVE"), _theirs("lenient", "apps", "PERMISSIVE"),
                 # Ignored by Istio: a selector in the root namespace.
                 _theirs("gw", "istio-system", "DISABLE", selector={"app": "gw"})]
        assert sm.permissive_exceptions(found, self.mesh + ["istio-system"], "istio-system",
                                        sm.declared_keys([{"namespace": "apps", "name": "lenient"}])) == []

    def test_the_line_names_them_and_the_fix(self):
        line = sm.exceptions_line(["apps/lenient (namespace-wide PERMISSIVE)"])
        assert line.startswith("mesh-wide STRICT does not reach all traffic of the mesh namespaces: "
                               "PeerAuthentication apps/lenient (namespace-wide PERMISSIVE) keep(s) it")
        assert "\n" not in line and "strict_mtls_namespace_policies" in line
