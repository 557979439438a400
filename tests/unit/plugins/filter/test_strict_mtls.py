"""Pure logic of the strict_mtls role (plugins/filter/strict_mtls.py): the PeerAuthentications, where
STRICT reaches, which pods it would cut off, and what to write or prune. The API side is covered by
tests/integration/test_strict_mtls.py."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.teg.istio.plugins.filter import strict_mtls as sm

V1 = "security.istio.io/v1"
LABELS = {"app.kubernetes.io/managed-by": "teg.istio"}


def pod(namespace, name, containers=("app",), init=(), phase="Running", restart_policy=None):
    init_containers = [dict({"name": n}, **({"restartPolicy": restart_policy} if restart_policy else {})) for n in init]
    return {"metadata": {"namespace": namespace, "name": name},
            "spec": {"containers": [{"name": n} for n in containers], "initContainers": init_containers},
            "status": {"phase": phase}}


class TestPolicies:
    def test_mesh_wide_default_only(self):
        assert sm.strict_mtls_policies([], "istio-system", "STRICT", V1) == [{
            "apiVersion": V1, "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "istio-system", "labels": LABELS},
            "spec": {"mtls": {"mode": "STRICT"}, "selector": None, "portLevelMtls": None},
        }]

    def test_namespace_policies_default_name_and_mode(self):
        out = sm.strict_mtls_policies([{"namespace": "apps"}], "istio-system", "PERMISSIVE", "security.istio.io/v1beta1")
        assert [(d["metadata"]["namespace"], d["metadata"]["name"], d["spec"]["mtls"]["mode"]) for d in out] == [
            ("istio-system", "default", "PERMISSIVE"), ("apps", "default", "STRICT")]
        assert {d["apiVersion"] for d in out} == {"security.istio.io/v1beta1"}

    def test_selector_and_ports_normalised(self):
        out = sm.strict_mtls_policies([{"namespace": "apps", "name": "metrics", "mode": "STRICT",
                                        "selector": {"app": "httpbin"},
                                        "port_level_mtls": {"9443": "PERMISSIVE", 80: "DISABLE"}}],
                                      "istio-system", "STRICT", V1)
        spec = out[1]["spec"]
        assert spec["selector"] == {"matchLabels": {"app": "httpbin"}}
        assert spec["portLevelMtls"] == {"80": {"mode": "DISABLE"}, "9443": {"mode": "PERMISSIVE"}}
        assert list(spec["portLevelMtls"]) == ["80", "9443"]

    def test_no_api_version_is_an_error(self):
        with pytest.raises(AnsibleFilterError):
            sm.strict_mtls_policies([], "istio-system", "STRICT", None)


class TestErrors:
    def test_valid(self):
        assert sm.strict_mtls_errors([{"namespace": "apps"},
                                      {"namespace": "apps", "name": "w", "selector": {"a": "b"},
                                       "port_level_mtls": {8080: "DISABLE"}}], "istio-system") == []

    def test_duplicate(self):
        errors = sm.strict_mtls_errors([{"namespace": "apps"}, {"namespace": "apps", "name": "default"}], "istio-system")
        assert errors == ["strict_mtls_namespace_policies entry apps/default is declared twice: keep one"]

    def test_second_mesh_wide_policy(self):
        errors = sm.strict_mtls_errors([{"namespace": "istio-system", "name": "other"}], "istio-system")
        assert len(errors) == 1 and "second mesh-wide policy" in errors[0]

    def test_root_namespace_with_selector_is_fine(self):
        assert sm.strict_mtls_errors([{"namespace": "istio-system", "name": "w", "selector": {"app": "x"}}],
                                     "istio-system") == []

    def test_ports_need_selector(self):
        errors = sm.strict_mtls_errors([{"namespace": "apps", "port_level_mtls": {"80": "DISABLE"}}], "istio-system")
        assert len(errors) == 1 and "without a selector" in errors[0]

    @pytest.mark.parametrize("port", ["0", "70000", "http", None])
    def test_bad_port(self, port):
        errors = sm.strict_mtls_errors([{"namespace": "a", "selector": {"x": "y"}, "port_level_mtls": {port: "STRICT"}}],
                                       "istio-system")
        assert len(errors) == 1 and "not a port number" in errors[0]

    def test_bad_port_mode(self):
        errors = sm.strict_mtls_errors([{"namespace": "a", "selector": {"x": "y"}, "port_level_mtls": {"80": "strict"}}],
                                       "istio-system")
        assert len(errors) == 1 and "is not one of STRICT" in errors[0]

    def test_every_error_is_one_line(self):
        errors = sm.strict_mtls_errors([{"namespace": "istio-system", "name": "x", "port_level_mtls": {"a": "b"}}] * 2,
                                       "istio-system")
        assert len(errors) >= 4 and all("\n" not in e for e in errors)


class TestCheckNamespaces:
    def test_mesh_wide_strict_checks_mesh_namespaces(self):
        assert sm.strict_mtls_check_namespaces(["teg", "apps"], [], "STRICT") == ["apps", "teg"]

    @pytest.mark.parametrize("mode", ["PERMISSIVE", "DISABLE", "UNSET"])
    def test_not_strict_checks_nothing(self, mode):
        assert sm.strict_mtls_check_namespaces(["teg", "apps"], [], mode) == []

    def test_strict_namespace_policy_is_checked_when_mesh_is_permissive(self):
        policies = [{"namespace": "apps", "mode": "STRICT"}, {"namespace": "other", "mode": "PERMISSIVE"}]
        assert sm.strict_mtls_check_namespaces(["teg"], policies, "PERMISSIVE") == ["apps"]

    def test_permissive_namespace_policy_exempts_its_namespace(self):
        policies = [{"namespace": "legacy", "mode": "PERMISSIVE"}]
        assert sm.strict_mtls_check_namespaces(["teg", "legacy"], policies, "STRICT") == ["teg"]

    def test_unset_namespace_policy_inherits(self):
        assert sm.strict_mtls_check_namespaces([], [{"namespace": "x", "mode": "UNSET"}], "STRICT") == ["x"]
        assert sm.strict_mtls_check_namespaces([], [{"namespace": "x", "mode": "UNSET"}], "PERMISSIVE") == []

    def test_policy_mode_defaults_to_strict(self):
        assert sm.strict_mtls_check_namespaces([], [{"namespace": "x"}], "PERMISSIVE") == ["x"]

    def test_strict_selector_policy_checks_namespace_even_if_namespace_is_permissive(self):
        policies = [{"namespace": "legacy", "mode": "PERMISSIVE"},
                    {"namespace": "legacy", "name": "db", "mode": "STRICT", "selector": {"app": "db"}}]
        assert sm.strict_mtls_check_namespaces([], policies, "STRICT") == ["legacy"]


class TestUnmeshed:
    def test_lists_pods_without_istio_proxy_sorted(self):
        pods = [pod("b", "p2"), pod("a", "p1"), pod("a", "meshed", containers=("app", "istio-proxy"))]
        assert sm.strict_mtls_unmeshed(pods) == ["a/p1", "b/p2"]

    def test_native_sidecar_counts(self):
        pods = [pod("a", "native", init=("istio-validation", "istio-proxy"), restart_policy="Always")]
        assert sm.strict_mtls_unmeshed(pods) == []

    def test_istio_init_alone_does_not_count(self):
        assert sm.strict_mtls_unmeshed([pod("a", "half", init=("istio-init",))]) == ["a/half"]

    @pytest.mark.parametrize("phase,listed", [("Succeeded", False), ("Failed", False), ("Pending", True), (None, True)])
    def test_finished_pods_are_left_out(self, phase, listed):
        assert sm.strict_mtls_unmeshed([pod("a", "p", phase=phase)]) == (["a/p"] if listed else [])

    def test_empty(self):
        assert sm.strict_mtls_unmeshed([]) == [] and sm.strict_mtls_unmeshed(None) == []


class TestChanged:
    defs = [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]

    def test_many_results(self):
        dry = {"result": {"results": [{"changed": False}, {"changed": True}]}}
        assert sm.strict_mtls_changed(self.defs, dry) == [self.defs[1]]

    def test_many_results_ignore_the_overwritten_top_level_changed(self):
        dry = {"changed": False, "result": {"results": [{"changed": True}, {"changed": True}]}}
        assert sm.strict_mtls_changed(self.defs, dry) == self.defs

    @pytest.mark.parametrize("result,changed", [
        ({"changed": False, "method": "create", "result": {}}, True),
        ({"changed": False, "method": "update", "diff": {"before": {"spec": {"mtls": {"mode": "PERMISSIVE"}}},
                                                         "after": {"spec": {"mtls": {"mode": "STRICT"}}}}}, True),
        ({"changed": False, "method": "update", "diff": {}}, False),
        ({"changed": False, "method": "update"}, False),
    ])
    def test_single_bare_result_decided_by_method_and_diff(self, result, changed):
        assert sm.strict_mtls_changed(self.defs[:1], result) == (self.defs[:1] if changed else [])

    def test_skipped_or_empty(self):
        assert sm.strict_mtls_changed(self.defs, {"skipped": True}) == []
        assert sm.strict_mtls_changed([], None) == []

    def test_mismatch_is_an_error(self):
        with pytest.raises(AnsibleFilterError):
            sm.strict_mtls_changed(self.defs, {"result": {"results": [{"changed": True}]}})


def _as_read(definition, **spec):
    """A definition as the API server returns it after create: nulls dropped, bookkeeping added."""
    meta = dict(definition["metadata"], uid="u", resourceVersion="7", generation=1)
    return {"apiVersion": definition["apiVersion"], "kind": "PeerAuthentication", "metadata": meta,
            "spec": dict({"mtls": definition["spec"]["mtls"]}, **spec)}


class TestPending:
    declared = sm.strict_mtls_policies([{"namespace": "apps", "name": "metrics", "selector": {"app": "m"},
                                         "port_level_mtls": {9443: "PERMISSIVE"}}], "istio-system", "STRICT", V1)

    def test_policies_read_as_declared_are_in_place(self):
        mesh, metrics = self.declared
        found = [_as_read(mesh), _as_read(metrics, selector=metrics["spec"]["selector"],
                                          portLevelMtls=metrics["spec"]["portLevelMtls"])]
        assert sm.strict_mtls_pending(self.declared, found) == []

    def test_absent_changed_or_carrying_a_field_no_longer_declared_are_pending(self):
        mesh, metrics = self.declared
        permissive = _as_read(mesh)
        permissive["spec"]["mtls"] = {"mode": "PERMISSIVE"}
        assert sm.strict_mtls_pending(self.declared, [permissive]) == self.declared
        # A selector an earlier run declared is removed by the explicit null of the definition.
        with_selector = _as_read(mesh, selector={"matchLabels": {"app": "old"}})
        assert sm.strict_mtls_pending(self.declared[:1], [with_selector]) == [mesh]


def test_stale_keeps_only_ours_not_declared():
    found = [
        {"apiVersion": V1, "metadata": {"namespace": "istio-system", "name": "default", "labels": LABELS}},
        {"apiVersion": V1, "metadata": {"namespace": "apps", "name": "default", "labels": LABELS}},
        {"apiVersion": V1, "metadata": {"namespace": "apps", "name": "theirs", "labels": {}}},
    ]
    declared = sm.strict_mtls_policies([], "istio-system", "STRICT", V1)
    assert sm.strict_mtls_stale(found, declared) == [
        {"apiVersion": V1, "kind": "PeerAuthentication", "metadata": {"name": "default", "namespace": "apps"}}]
    assert [o["metadata"]["namespace"] for o in sm.strict_mtls_stale(found, [])] == ["apps", "istio-system"]


def test_the_reads_are_the_managed_policies_then_namespaces_then_pods_of_each_reached_namespace():
    reads = sm.strict_mtls_reads(["httpbin", "envoy-gateway-system"], "present")
    assert reads[0] == {"kind": "PeerAuthentication", "label_selectors": ["app.kubernetes.io/managed-by=teg.istio"]}
    assert reads[1] == {"kind": "Namespace", "api_version": "v1"}
    assert [(r["kind"], r["namespace"]) for r in reads[2:]] == [("Pod", "httpbin"), ("Pod", "envoy-gateway-system")]


def test_teardown_reads_only_the_managed_policies():
    assert [r["kind"] for r in sm.strict_mtls_reads(["httpbin"], "absent")] == ["PeerAuthentication"]
