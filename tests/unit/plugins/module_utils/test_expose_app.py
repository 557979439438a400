"""Pure rendering of the expose_app role (module_utils/_expose_app/): validation of the app list,
the Gateway, HTTPRoutes, VirtualServices, the service-routing pair, and what to apply or prune.
The API side is covered by tests/integration/test_expose_app.py."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from ansible_collections.teg.istio.plugins.module_utils import _diffs
from ansible_collections.teg.istio.plugins.module_utils._expose_app import backends, changes, render
from ansible_collections.teg.istio.plugins.module_utils._expose_app import plan as expose_plan

REPO = Path(__file__).resolve().parents[4]
SAMPLE = yaml.safe_load((REPO / "roles" / "expose_app" / "files" / "httpbin.yaml").read_text())["items"]
SAMPLE_IMAGE = yaml.safe_load((REPO / "roles" / "expose_app" / "defaults" / "main.yml").read_text())["expose_app_sample_image"]

CURRENT = {
    "kubernetes_version": "v1.34.4",
    "envoyproxy": {"api_version": "gateway.envoyproxy.io/v1alpha1", "group": "gateway.envoyproxy.io",
                   "pod_annotations": True, "routing_type": True},
    "gateway_api": {"api_version": "gateway.networking.k8s.io/v1"},
    "istio": {"virtualservice_api_version": "networking.istio.io/v1",
              "peerauthentication_api_version": "security.istio.io/v1", "istiod": None},
    "gatewayclass": {"name": "teg", "controller_name": "gateway.envoyproxy.io/gatewayclass-controller",
                     "parameters_ref": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                        "name": "teg-envoy-proxy", "namespace": "envoy-gateway-system"}},
}
LEGACY = {
    "kubernetes_version": "v1.34.4",
    "envoyproxy": {"api_version": "config.gateway.envoyproxy.io/v1alpha1", "group": "config.gateway.envoyproxy.io",
                   "pod_annotations": True, "routing_type": False},
    "gateway_api": {"api_version": "gateway.networking.k8s.io/v1beta1"},
    "istio": {"virtualservice_api_version": "networking.istio.io/v1beta1",
              "peerauthentication_api_version": "security.istio.io/v1beta1", "istiod": None},
    "gatewayclass": {"name": "teg", "controller_name": "gateway.envoyproxy.io/gatewayclass-controller",
                     "parameters_ref": None},
}
HTTPBIN = {"name": "httpbin", "namespace": "httpbin", "port": 8000, "hostnames": ["www.example.com"],
           "path_prefix": "/httpbin"}


def settings(cluster=None, routing="virtualservice", sample=False, **overrides):
    if cluster is None:
        cluster = CURRENT
    s = {
        "routing": routing,
        "gateway": {"name": "apps", "namespace": "envoy-gateway-system", "class": "teg",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
        "virtualservice": {"namespace": "envoy-gateway-system", "export_to": ["."]},
        "sample": {"enabled": sample, "namespace": "httpbin", "image": SAMPLE_IMAGE, "manifest": copy.deepcopy(SAMPLE)},
        "cluster": copy.deepcopy(cluster),
    }
    s.update(overrides)
    return s


def plan(apps, **kw):
    return render.render(copy.deepcopy(apps), settings(**kw))


def by_kind(p, kind):
    return [o for o in p["objects"] if o["kind"] == kind]


class TestProcedureRendering:
    def test_httpbin_objects_match_the_procedure(self):
        p = plan([HTTPBIN])
        assert p["errors"] == []
        [gw] = by_kind(p, "Gateway")
        assert gw["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert gw["metadata"] == {"name": "apps", "namespace": "envoy-gateway-system", "labels": {
            "app.kubernetes.io/managed-by": "teg.istio", "teg.istio/gateway": "apps",
            "teg.istio/gateway-namespace": "envoy-gateway-system"}}
        assert gw["spec"]["gatewayClassName"] == "teg"
        [listener] = gw["spec"]["listeners"]
        assert (listener["name"], listener["port"], listener["protocol"]) == ("http", 80, "HTTP")
        assert listener["allowedRoutes"]["namespaces"]["selector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["httpbin"]}]

        [route] = by_kind(p, "HTTPRoute")
        assert route["metadata"]["namespace"] == "httpbin"
        assert route["metadata"]["labels"]["teg.istio/app"] == "httpbin"
        assert route["spec"]["parentRefs"] == [{"name": "apps", "namespace": "envoy-gateway-system"}]
        assert route["spec"]["hostnames"] == ["www.example.com"]
        [rule] = route["spec"]["rules"]
        # Not stripped at the edge: the mesh layer matches on the prefix.
        assert rule == {"matches": [{"path": {"type": "PathPrefix", "value": "/httpbin"}}],
                        "backendRefs": [{"name": "httpbin", "port": 8000}]}

        [vs] = by_kind(p, "VirtualService")
        assert vs["apiVersion"] == "networking.istio.io/v1"
        assert vs["metadata"]["name"] == "apps-www.example.com"
        assert vs["metadata"]["namespace"] == "envoy-gateway-system"
        assert vs["spec"]["hosts"] == ["www.example.com"]
        assert vs["spec"]["gateways"] == ["mesh"]
        assert vs["spec"]["exportTo"] == ["."]
        dest = [{"destination": {"host": "httpbin.httpbin.svc.cluster.local", "port": {"number": 8000}}}]
        assert vs["spec"]["http"] == [
            {"name": "httpbin", "match": [{"uri": {"prefix": "/httpbin/"}}], "rewrite": {"uri": "/"}, "route": dest},
            {"name": "httpbin-exact", "match": [{"uri": {"exact": "/httpbin"}}], "rewrite": {"uri": "/"},
             "route": dest},
        ]

    def test_legacy_api_versions(self):
        p = plan([HTTPBIN], cluster=LEGACY)
        assert p["errors"] == []
        assert {o["kind"]: o["apiVersion"] for o in p["objects"]} == {
            "Gateway": "gateway.networking.k8s.io/v1beta1", "HTTPRoute": "gateway.networking.k8s.io/v1beta1",
            "VirtualService": "networking.istio.io/v1beta1"}

    def test_defaults_service_name_prefix_and_rewrite(self):
        p = plan([{"name": "web", "namespace": "shop", "port": 80, "hostnames": ["shop.example.com"]}])
        [app] = p["apps"]
        assert (app["service"], app["path_prefix"], app["rewrite"]) == ("web", "/", "/")
        [vs] = by_kind(p, "VirtualService")
        assert vs["spec"]["http"] == [{"name": "web", "match": [{"uri": {"prefix": "/"}}], "route": [
            {"destination": {"host": "web.shop.svc.cluster.local", "port": {"number": 80}}}]}]

    def test_rewrite_to_another_prefix_keeps_one_slash(self):
        p = plan([dict(HTTPBIN, path_prefix="/old/", rewrite="/new")])
        http = by_kind(p, "VirtualService")[0]["spec"]["http"]
        assert [(h["match"][0]["uri"], h["rewrite"]["uri"]) for h in http] == [
            ({"prefix": "/old/"}, "/new/"), ({"exact": "/old"}, "/new")]

    def test_rewrite_equal_to_prefix_keeps_the_path(self):
        http = by_kind(plan([dict(HTTPBIN, rewrite="/httpbin")]), "VirtualService")[0]["spec"]["http"]
        assert http == [{"name": "httpbin", "match": [{"uri": {"prefix": "/httpbin"}}], "route": http[0]["route"]}]

    def test_export_to_empty_renders_null_so_a_merge_patch_removes_it(self):
        p = plan([HTTPBIN], virtualservice={"namespace": "envoy-gateway-system", "export_to": []})
        assert by_kind(p, "VirtualService")[0]["spec"]["exportTo"] is None

    def test_section_name_becomes_parent_ref_section(self):
        listeners = [{"name": "http", "port": 80, "protocol": "HTTP"}, {"name": "alt", "port": 8080, "protocol": "HTTP"}]
        s = settings()
        s["gateway"]["listeners"] = listeners
        p = render.render([dict(HTTPBIN, section_name="alt")], s)
        assert by_kind(p, "HTTPRoute")[0]["spec"]["parentRefs"][0]["sectionName"] == "alt"
        assert len(by_kind(p, "Gateway")[0]["spec"]["listeners"]) == 2

    def test_listener_with_allowed_routes_is_left_alone(self):
        s = settings()
        s["gateway"]["listeners"] = [{"name": "http", "port": 80, "protocol": "HTTP",
                                      "allowedRoutes": {"namespaces": {"from": "All"}}}]
        p = render.render([HTTPBIN], s)
        assert by_kind(p, "Gateway")[0]["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "All"}}

    def test_no_app_needs_a_gateway_so_none_is_made(self):
        p = plan([])
        assert p["errors"] == [] and p["objects"] == []

    def test_routes_attach_to_the_platform_team_s_gateway_without_making_one(self):
        s = settings()
        s["gateway"] = dict(s["gateway"], name="platform", namespace="edge", create=False, listeners=[])
        p = render.render([dict(HTTPBIN, section_name="web")], s)
        assert p["errors"] == [] and "Gateway" not in [o["kind"] for o in p["objects"]]
        [route] = [o for o in p["objects"] if o["kind"] == "HTTPRoute"]
        assert route["spec"]["parentRefs"] == [{"name": "platform", "namespace": "edge", "sectionName": "web"}]


class TestExistingGateway:
    GATEWAY = {"metadata": {"name": "platform", "namespace": "edge"}, "spec": {"listeners": [
        {"name": "web", "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"edge": "yes"}}}}},
        {"name": "local"}]}}

    def check(self, apps, labels=None, gateway=None, missing=False):
        s = {"gateway": {"name": "platform", "namespace": "edge", "create": False}}
        gateway = None if missing else (gateway or self.GATEWAY)
        found = {"listed": {("Gateway", "edge"): {"platform": gateway} if gateway else {}},
                 "namespaces": {"httpbin": {"labels": labels or {}}}}
        return expose_plan.existing_gateway_errors(s, apps, found)

    def test_it_must_exist(self):
        assert self.check([dict(HTTPBIN, section_name=None)], missing=True) == [
            "Gateway edge/platform does not exist: create it, or set expose_app_gateway_create: true to let the role "
            "create it"]

    def test_the_listener_must_exist_and_admit_the_app_s_namespace(self):
        assert self.check([dict(HTTPBIN, section_name="web")], {"edge": "yes"}) == []
        assert self.check([dict(HTTPBIN, section_name="web")], {"edge": "no"}) == [
            "app httpbin: no listener of Gateway edge/platform admits routes from namespace httpbin (allowedRoutes): "
            "allow it on the Gateway, or set section_name to a listener that does"]
        # "local" admits its own namespace only (Same, the default).
        assert len(self.check([dict(HTTPBIN, section_name="local")], {"edge": "yes"})) == 1
        assert self.check([dict(HTTPBIN, section_name="tls")]) == [
            "app httpbin: Gateway edge/platform has no listener tls (it has local, web): set the app's section_name to one "
            "of them"]


class TestSharedHosts:
    def test_apps_sharing_a_host_share_one_virtualservice_longest_prefix_first(self):
        apps = [dict(HTTPBIN, name="root", path_prefix="/", rewrite="/"),
                dict(HTTPBIN, name="api", path_prefix="/api", rewrite="/api"),
                dict(HTTPBIN, name="apiv2", path_prefix="/api/v2", rewrite="/api/v2",
                     hostnames=["www.example.com", "*.example.org"])]
        p = plan(apps)
        assert p["errors"] == []
        vss = {v["spec"]["hosts"][0]: v for v in by_kind(p, "VirtualService")}
        assert sorted(vss) == ["*.example.org", "www.example.com"]
        assert vss["*.example.org"]["metadata"]["name"] == "apps-wildcard.example.org"
        assert [h["name"] for h in vss["www.example.com"]["spec"]["http"]] == ["apiv2", "api", "root"]
        assert vss["www.example.com"]["metadata"]["annotations"]["teg.istio/apps"] == "api,apiv2,root"
        assert len(by_kind(p, "HTTPRoute")) == 3


class TestServiceRouting:
    def test_service_mode_rewrites_host_and_prefix_and_has_no_virtualservice(self):
        p = plan([HTTPBIN], routing="service")
        assert p["errors"] == []
        assert by_kind(p, "VirtualService") == []
        [route] = by_kind(p, "HTTPRoute")
        assert route["spec"]["rules"][0]["filters"] == [{"type": "URLRewrite", "urlRewrite": {
            "hostname": "httpbin.httpbin.svc.cluster.local",
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
        assert p["envoyproxy_ref"]["name"] == "teg-envoy-proxy"

    def test_service_mode_without_prefix_change_has_no_path_rewrite(self):
        p = plan([dict(HTTPBIN, rewrite="/httpbin")], routing="service")
        assert by_kind(p, "HTTPRoute")[0]["spec"]["rules"][0]["filters"][0]["urlRewrite"] == {
            "hostname": "httpbin.httpbin.svc.cluster.local"}

    def test_service_mode_refused_where_envoyproxy_has_no_routing_type(self):
        errors = plan([HTTPBIN], routing="service", cluster=LEGACY)["errors"]
        assert len(errors) == 1
        assert "routingType" in errors[0] and "config.gateway.envoyproxy.io/v1alpha1" in errors[0]

    def test_service_mode_refused_without_parameters_ref(self):
        cluster = copy.deepcopy(CURRENT)
        cluster["gatewayclass"]["parameters_ref"] = None
        [error] = plan([HTTPBIN], routing="service", cluster=cluster)["errors"]
        assert error.startswith("GatewayClass teg has no parametersRef")

    def test_missing_gatewayclass_refused(self):
        cluster = copy.deepcopy(CURRENT)
        cluster["gatewayclass"] = None
        [error] = plan([HTTPBIN], cluster=cluster)["errors"]
        assert error.startswith("GatewayClass teg does not exist")

    def test_virtualservice_mode_refused_without_istio(self):
        cluster = copy.deepcopy(LEGACY)
        cluster["istio"]["virtualservice_api_version"] = None
        [error] = plan([HTTPBIN], cluster=cluster)["errors"]
        assert "VirtualService API" in error and "istio_install" in error


class TestEnvoyProxyPatch:
    EP = {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
          "metadata": {"name": "teg-envoy-proxy", "namespace": "envoy-gateway-system"},
          "spec": {"provider": {"type": "Kubernetes"}, "logging": {"level": {"default": "warn"}}}}

    def test_service_mode_sets_only_routing_type(self):
        patch = render.envoyproxy_routing_patch(self.EP, "service", "gateway.envoyproxy.io/v1alpha1")
        assert patch == {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
                         "metadata": {"name": "teg-envoy-proxy", "namespace": "envoy-gateway-system"},
                         "spec": {"routingType": "Service"}}

    def test_nothing_when_already_set(self):
        ep = copy.deepcopy(self.EP)
        ep["spec"]["routingType"] = "Service"
        assert render.envoyproxy_routing_patch(ep, "service", "gateway.envoyproxy.io/v1alpha1") is None

    def test_virtualservice_mode_removes_service_routing(self):
        ep = copy.deepcopy(self.EP)
        ep["spec"]["routingType"] = "Service"
        patch = render.envoyproxy_routing_patch(ep, "virtualservice", "gateway.envoyproxy.io/v1alpha1")
        assert patch["spec"] == {"routingType": None}

    def test_virtualservice_mode_leaves_endpoint_routing(self):
        assert render.envoyproxy_routing_patch(self.EP, "virtualservice", "x") is None
        assert render.envoyproxy_routing_patch(None, "service", "x") is None


class TestBadInput:
    @pytest.mark.parametrize("host, fragment", [
        ("WWW.example.com", "upper-case"),
        ("www.exa_mple.com", "RFC 1123"),
        ("10.0.0.1", "IP address"),
        ("www.*.com", "wildcard"),
        ("*", "wildcard"),
        ("-bad.example.com", "RFC 1123"),
        ("a" * 64 + ".example.com", "longer than 63"),
    ])
    def test_invalid_hostname(self, host, fragment):
        [error] = plan([dict(HTTPBIN, hostnames=[host])])["errors"]
        assert error.startswith("app httpbin: hostname %r" % host) and fragment in error

    def test_wildcard_leftmost_is_fine(self):
        assert plan([dict(HTTPBIN, hostnames=["*.example.com"])])["errors"] == []

    def test_duplicate_host_and_prefix(self):
        [error] = plan([HTTPBIN, dict(HTTPBIN, name="other", namespace="other", path_prefix="/httpbin/")])["errors"]
        assert error == ("apps httpbin and other both claim host www.example.com with path_prefix /httpbin: "
                         "give one of them another hostname or path_prefix")

    def test_same_host_other_prefix_is_fine(self):
        assert plan([HTTPBIN, dict(HTTPBIN, name="other", path_prefix="/other")])["errors"] == []

    def test_duplicate_names(self):
        [error] = plan([HTTPBIN, dict(HTTPBIN, namespace="b", hostnames=["b.example.com"])])["errors"]
        assert "same name" in error

    @pytest.mark.parametrize("app, fragment", [
        (dict(HTTPBIN, path_prefix="httpbin"), "path_prefix 'httpbin' must start with '/'"),
        (dict(HTTPBIN, path_prefix="/a//b"), "must not contain '//'"),
        (dict(HTTPBIN, rewrite="/x?y"), "rewrite '/x?y' must be a plain path"),
        (dict(HTTPBIN, port=0), "port 0 is not a port number"),
        (dict(HTTPBIN, port="http"), "port 'http' is not a port number"),
        (dict(HTTPBIN, hostnames=[]), "hostnames is empty"),
        (dict(HTTPBIN, namespace="Bad_NS"), "namespace 'Bad_NS'"),
        (dict(HTTPBIN, name="Bad"), "name 'Bad' is not a DNS-1123 label"),
        (dict(HTTPBIN, colour="red"), "unknown key(s) colour"),
        (dict(HTTPBIN, section_name="https"), "section_name 'https' is not a listener"),
        (dict(HTTPBIN, hostnames=["h%d.example.com" % i for i in range(17)]), "at most 16"),
    ])
    def test_each_bad_input_is_one_line(self, app, fragment):
        errors = plan([app])["errors"]
        assert len(errors) == 1 and fragment in errors[0], errors
        assert "\n" not in errors[0]

    def test_bad_routing(self):
        assert plan([HTTPBIN], routing="magic")["errors"] == [
            "expose_app_routing is 'magic': use virtualservice or service"]

    def test_errors_render_nothing(self):
        p = plan([dict(HTTPBIN, hostnames=["BAD"])])
        assert set(p) == {"errors"}


class TestSample:
    def test_sample_objects_get_namespace_label_and_image(self):
        p = plan([HTTPBIN], sample=True)
        kinds = [o["kind"] for o in p["sample_objects"]]
        assert kinds == ["ServiceAccount", "Deployment", "Service"]
        for obj in p["sample_objects"]:
            assert obj["metadata"]["namespace"] == "httpbin"
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "teg.istio"
        dep = p["sample_objects"][1]
        [container] = dep["spec"]["template"]["spec"]["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": 80}]
        svc = p["sample_objects"][2]
        assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": 80}]
        assert p["objects"][:3] == p["sample_objects"]
        assert p["namespaces"] == ["httpbin"]

    def test_sample_does_not_change_the_manifest_it_was_given(self):
        s = settings(sample=True)
        before = copy.deepcopy(s["sample"]["manifest"])
        render.render([HTTPBIN], s)
        assert s["sample"]["manifest"] == before


class TestNamespaces:
    LABELS = {"istio-injection": "enabled"}

    def test_existing_namespace_only_labelled_when_needed_and_the_owners_revision_kept(self):
        p = plan([HTTPBIN, dict(HTTPBIN, name="b", namespace="b", hostnames=["b.example.com"]),
                  dict(HTTPBIN, name="c", namespace="c", hostnames=["c.example.com"])])
        found = {"httpbin": {"exists": True, "labels": {"istio-injection": "enabled"}},
                 "b": {"exists": True, "labels": {"team": "x"}},
                 "c": {"exists": True, "labels": {"istio.io/rev": "stable"}}}
        objects, errors = changes.namespace_objects(p, found, self.LABELS)
        assert errors == [] and [o["metadata"]["name"] for o in objects] == ["b"]
        assert objects[0]["metadata"]["labels"] == self.LABELS
        assert json.loads(objects[0]["metadata"]["annotations"]["teg.istio/prior"]) == {
            "/metadata/labels/istio-injection": [None, "enabled"]}

    def test_an_opted_out_namespace_is_refused_unless_named(self):
        p = plan([HTTPBIN])
        found = {"httpbin": {"exists": True, "labels": {"istio-injection": "disabled"}}}
        assert changes.namespace_objects(p, found, self.LABELS) == ([], [
            "namespace httpbin is opted out of the mesh by its owners (istio-injection=disabled): leave it out, or "
            "enrol it explicitly with expose_app_enrol_opted_out: [httpbin] (teardown gives istio-injection=disabled "
            "back)"])
        [patch], errors = changes.namespace_objects(p, found, self.LABELS, enrol_opted_out=["httpbin"])
        assert errors == [] and patch["metadata"]["labels"] == self.LABELS

    def test_sample_namespace_claimed_only_when_created(self):
        p = plan([HTTPBIN], sample=True)
        [created], _unused = changes.namespace_objects(p, {"httpbin": {"exists": False, "labels": {}}}, self.LABELS, "httpbin")
        assert created["metadata"]["labels"] == {"istio-injection": "enabled",
                                                 "app.kubernetes.io/managed-by": "teg.istio"}
        [labelled], _unused = changes.namespace_objects(p, {"httpbin": {"exists": True, "labels": {}}}, self.LABELS, "httpbin")
        assert labelled["metadata"]["labels"] == self.LABELS


class TestApplyAndPrune:
    def test_changed_selects_only_what_the_dry_run_found_different(self):
        defs = [{"kind": "A", "metadata": {"name": str(i)}} for i in range(3)]
        results = [{"changed": False}, {"changed": True, "method": "create"}, {"changed": False}]
        assert _diffs.changed_definitions(defs, results) == [defs[1]]

    def test_a_status_update_between_read_and_dry_run_is_not_a_change(self):
        defs = [{"kind": "Deployment", "metadata": {"name": "d", "namespace": "n"}}]
        result = {"changed": True, "method": "update", "diff": {
            "before": {"metadata": {"resourceVersion": "1", "managedFields": [1]}, "status": {"readyReplicas": 0}},
            "after": {"metadata": {"resourceVersion": "2", "managedFields": [2]}, "status": {"readyReplicas": 1}}}}
        assert _diffs.changed_definitions(defs, [result]) == []
        assert _diffs.dry_run_diffs(defs, [result]) == []
        result["diff"]["after"]["spec"] = {"replicas": 2}
        assert _diffs.changed_definitions(defs, [result]) == defs

    def test_changed_refuses_misaligned_results(self):
        with pytest.raises(ValueError):
            _diffs.changed_definitions([{"metadata": {}}, {"metadata": {}}], [{"changed": True}])

    def test_stale_is_what_we_made_and_no_longer_declare(self):
        p = plan([HTTPBIN])
        labels = {"app.kubernetes.io/managed-by": "teg.istio"}
        found = [
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "httpbin", "namespace": "httpbin", "labels": labels}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "gone", "namespace": "old", "labels": labels}},
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "apps-old.example.com", "namespace": "envoy-gateway-system", "labels": labels}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "theirs", "namespace": "old", "labels": {}}},
        ]
        assert changes.describe_all(changes.stale_objects(found, p)) == [
            "HTTPRoute old/gone", "VirtualService envoy-gateway-system/apps-old.example.com"]

    def test_switching_to_service_routing_prunes_virtualservices(self):
        vs_plan = plan([HTTPBIN])
        found = [v for v in vs_plan["objects"] if v["kind"] == "VirtualService"]
        assert len(changes.stale_objects(found, plan([HTTPBIN], routing="service"))) == 1

    def test_split_keeps_objects_of_new_namespaces_out_of_the_dry_run(self):
        p = plan([HTTPBIN], sample=True)
        split = changes.split_pending(p["objects"], ["httpbin"])
        assert [o["kind"] for o in split["ready"]] == ["Gateway", "VirtualService"]
        assert [o["kind"] for o in split["pending"]] == ["ServiceAccount", "Deployment", "Service", "HTTPRoute"]
        assert changes.split_pending(p["objects"], [])["pending"] == []

    def test_hundred_apps(self):
        apps = [dict(HTTPBIN, name="app%03d" % i, path_prefix="/app%03d" % i) for i in range(100)]
        p = plan(apps)
        assert p["errors"] == []
        assert len(by_kind(p, "HTTPRoute")) == 100
        # All on one host: one VirtualService carrying two routes per app.
        [vs] = by_kind(p, "VirtualService")
        assert len(vs["spec"]["http"]) == 200
        assert len(p["owned"]) == 102


class TestDiff:
    def test_diff_shows_only_changed_objects(self):
        defs = [{"kind": "VirtualService", "metadata": {"name": "v", "namespace": "n"}},
                {"kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "a"}},
                {"kind": "HTTPRoute", "metadata": {"name": "s", "namespace": "a"}}]
        results = [
            {"changed": True, "method": "update",
             "diff": {"before": {"metadata": {"generation": 1}, "spec": {"exportTo": ["*"]}},
                      "after": {"metadata": {"generation": 2, "managedFields": []}, "spec": {"exportTo": ["."]}}}},
            {"changed": False, "method": "update"},
            {"changed": True, "method": "create"}]
        vs_diff, created = _diffs.dry_run_diffs(defs, results)
        assert created == "HTTPRoute a/s: created"
        assert vs_diff.splitlines()[:2] == ["--- VirtualService n/v (cluster)", "+++ VirtualService n/v (declared)"]
        assert "-  - '*'" in vs_diff and "+  - ." in vs_diff
        assert "generation" not in vs_diff and "managedFields" not in vs_diff


def test_teardown_gives_back_only_what_the_record_on_each_app_namespace_says():
    record = json.dumps({"/metadata/labels/istio-injection": [None, "enabled"]})
    namespaces = [
        {"metadata": {"name": "shop", "labels": {"istio-injection": "enabled", "team": "a"},
                      "annotations": {"teg.istio/prior": record}}},
        {"metadata": {"name": "plain", "labels": {"team": "b"}}},
        # In the mesh before the collection came: no record, nothing to give back.
        {"metadata": {"name": "owners", "labels": {"istio-injection": "enabled"}}},
        {"metadata": {"name": "httpbin", "labels": {"istio-injection": "enabled",
                                                    "app.kubernetes.io/managed-by": "teg.istio"},
                      "annotations": {"teg.istio/prior": record}}},
        {"metadata": {"name": "other", "labels": {"istio-injection": "enabled"},
                      "annotations": {"teg.istio/prior": record}}},
    ]
    assert changes.unlabel_patches(namespaces, ["shop", "plain", "owners", "httpbin"]) == [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"istio-injection": None},
                                                               "annotations": {"teg.istio/prior": None}}}]


def test_the_owned_reads_find_exactly_what_the_plan_labels_as_made_for_this_gateway():
    plan = render.render([copy.deepcopy(HTTPBIN)], settings())
    assert not plan["errors"]
    reads = {r["kind"]: r["label_selectors"] for r in render.owned_reads(settings())}
    checked = False
    for obj in plan["objects"]:
        if obj["kind"] in reads:
            labels = obj["metadata"]["labels"]
            for selector in reads[obj["kind"]]:
                key, _sep, value = selector.partition("=")
                assert key in labels and (not value or labels[key] == value), (obj["kind"], selector)
            checked = True
    assert checked
    assert plan["prune_selectors"] == {"httproute": reads["HTTPRoute"], "virtualservice": reads["VirtualService"]}


def _read_results(reads, cluster):
    """What ClusterView.read would return for `reads` against `cluster`, a dict (kind, namespace) -> objects."""
    results = {}
    for name, spec in reads.items():
        objects = cluster.get((spec["kind"], spec.get("namespace")), [])
        if spec.get("name"):
            objects = [o for o in objects if o["metadata"]["name"] == spec["name"]]
        for key, sep, value in (sel.partition("=") for sel in spec.get("label_selectors") or []):
            objects = [o for o in objects if key in (o["metadata"].get("labels") or {})
                       and (not sep or o["metadata"]["labels"][key] == value)]
        results[name] = {"resources": copy.deepcopy(objects)}
    return results


WEB = {"name": "web", "namespace": "shop", "port": 8000, "hostnames": ["shop.example.com"]}


class TestOneRead:
    def test_reads_cover_every_namespace_backend_and_name_the_plan_writes(self):
        s = settings(sample=True)
        plan = render.render([copy.deepcopy(HTTPBIN), copy.deepcopy(WEB)], s)
        reads = list(backends.reads([HTTPBIN, WEB], s, True).values())
        named = {r["name"] for r in reads if r["kind"] == "Namespace"}
        assert named == set(plan["namespaces"]) | {"envoy-gateway-system"}
        lists = {(r["kind"], r.get("namespace")) for r in reads if not r.get("name") and not r.get("label_selectors")}
        for app in plan["backends"]:
            assert {("Service", app["namespace"]), ("Pod", app["namespace"])} <= lists
        assert {(ref["kind"], ref["namespace"]) for ref in plan["owned"]} <= lists
        assert [r for r in reads if r.get("label_selectors")] == render.owned_reads(s)

    def test_without_prune_and_with_service_routing_nothing_extra_is_read(self):
        reads = list(backends.reads([HTTPBIN], settings(routing="service"), False).values())
        assert not any(r.get("label_selectors") for r in reads)
        assert "VirtualService" not in {r["kind"] for r in reads}

    def test_apps_that_cannot_be_rendered_and_a_bad_sample_namespace_are_not_read(self):
        s = settings(sample=True)
        s["sample"]["namespace"] = "Not/A-Name"
        reads = list(backends.reads([dict(WEB, namespace="Bad_NS"), 42], s, False).values())
        assert {r.get("namespace") or r.get("name") for r in reads} == {"envoy-gateway-system"}

    def test_found_objects_are_checked_and_indexed(self):
        s = settings(sample=True)
        plan = render.render([copy.deepcopy(HTTPBIN), copy.deepcopy(WEB)], s)
        reads = backends.reads([HTTPBIN, WEB], s, True)
        [stale] = [o for o in plan["objects"] if o["kind"] == "HTTPRoute" and o["metadata"]["name"] == "web"]
        stale = copy.deepcopy(stale)
        stale["metadata"]["name"] = "gone"
        cluster = {
            ("Namespace", None): [{"metadata": {"name": "shop", "labels": {"team": "a"}}},
                                  {"metadata": {"name": "envoy-gateway-system"}}],
            ("Service", "shop"): [{"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 8000}, {"name": "grpc", "port": 9000, "appProtocol": "kubernetes.io/h2c"}]}}],
            ("Pod", "shop"): [{"metadata": {"name": "web-1", "labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "main", "ports": [{"name": "http", "containerPort": 80}]}]}}],
            ("HTTPRoute", "shop"): [{"metadata": {"name": "web", "labels": {"team": "a"}}}],
            ("HTTPRoute", None): [stale],
        }
        found = backends.check_backends(plan, reads, _read_results(reads, cluster))
        assert found["namespaces"]["shop"] == {"exists": True, "labels": {"team": "a"},
                                               "object": cluster[("Namespace", None)][0]}
        assert found["namespaces"]["httpbin"] == {"exists": False, "labels": {}, "object": None}
        # httpbin's namespace does not exist yet, but the sample plans its Service: no error for it.
        assert found["services"]["httpbin/httpbin"]["planned"] is True
        assert found["services"]["shop/web"]["planned"] is False
        assert found["errors"] == [
            "app web: Service shop/web port 9000 declares HTTP/2 (appProtocol kubernetes.io/h2c); " + backends._CAVEAT
            + ": rename the port (e.g. http-...) and drop appProtocol http2/kubernetes.io/h2c",
            "HTTPRoute shop/web exists and is not managed by teg.istio (no label app.kubernetes.io/managed-by="
            "teg.istio): rename the app or the Gateway, or remove that object",
        ]
        assert [o["metadata"]["name"] for o in found["managed"]] == ["gone"]

    HEADLESS = ("app web: Service shop/web is headless (clusterIP: None) and has no cluster IP for expose_app_routing: "
                "service: point the app at a ClusterIP Service that selects the same pods, or use expose_app_routing: "
                "virtualservice")
    EXTERNAL = ("app web: Service shop/web is of type ExternalName (web.example.net), which Envoy Gateway does not "
                "route to: point the app at a Service with a selector (or an Envoy Gateway Backend, outside this role)")

    @pytest.mark.parametrize("spec, routing, expected", [
        ({"clusterIP": "None", "selector": {"app": "web"}}, "service", HEADLESS),
        # Endpoint routing (the VirtualService mode) sends to the pods, which a headless Service has too.
        ({"clusterIP": "None", "selector": {"app": "web"}}, "virtualservice", None),
        ({"type": "ExternalName", "externalName": "web.example.net"}, "service", EXTERNAL),
        ({"type": "ExternalName", "externalName": "web.example.net"}, "virtualservice", EXTERNAL),
        ({"clusterIP": "10.0.0.7", "selector": {"app": "web"}}, "service", None),
        ({"type": "ClusterIP", "selector": {"app": "web"}}, "service", None),
    ])
    def test_a_backend_without_a_cluster_ip(self, spec, routing, expected):
        """envoyproxy/gateway#7849: routingType Service has no cluster IP to route to; Envoy Gateway refuses
        ExternalName backends in every mode."""
        cluster = {("Namespace", None): [{"metadata": {"name": "shop"}}],
                   ("Service", "shop"): [{"metadata": {"name": "web"},
                                          "spec": dict(spec, ports=[{"name": "http", "port": 8000}])}]}
        plan = render.render([copy.deepcopy(WEB)], settings(routing=routing))
        reads = backends.reads([WEB], settings(routing=routing), False)
        errors = backends.check_backends(plan, reads, _read_results(reads, cluster), routing)["errors"]
        assert errors == ([expected] if expected else []), errors

    def test_an_app_in_a_missing_namespace_without_a_planned_service_is_refused(self):
        plan = render.render([copy.deepcopy(WEB)], settings())
        reads = backends.reads([WEB], settings(), False)
        [error] = backends.check_backends(plan, reads, _read_results(reads, {}))["errors"]
        assert error.startswith("app web: namespace shop does not exist, so Service shop/web cannot either")


def test_the_sample_and_the_listeners_are_copied_as_plain_data():
    class Tagged(dict):
        """Stands in for Ansible's tagged dict, which filters receive instead of dict."""

    s = settings(sample=True)
    s["sample"]["manifest"] = [Tagged(doc) for doc in s["sample"]["manifest"]]
    s["gateway"]["listeners"] = [Tagged(s["gateway"]["listeners"][0])]
    p = render.render([copy.deepcopy(HTTPBIN)], s)
    copied = p["sample_objects"] + [by_kind(p, "Gateway")[0]["spec"]["listeners"][0]]
    assert copied and not any(isinstance(obj, Tagged) for obj in copied)
    assert all("namespace" not in (doc.get("metadata") or {}) for doc in s["sample"]["manifest"])
