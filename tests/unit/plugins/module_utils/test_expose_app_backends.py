"""The backend checks of expose_app (reads, check_backends and their helpers in
module_utils/_expose_app/backends.py): the HTTP/2 caveat on Service and container ports, port presence,
planned objects standing in for live ones, the ownership check, and that the one read lists
everything the checks need. The reads against a real API server are covered by
tests/integration/test_expose_app.py."""

import pytest

from ansible_collections.teg.istio.plugins.module_utils._expose_app import backends as bc

APP = {"name": "web", "namespace": "shop", "service": "web", "port": 8000}


def service(ports, selector=None):
    return {"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"app": "web"} if selector is None else selector, "ports": ports}}


def pod(name, ports, labels=None):
    return {"metadata": {"name": name, "labels": {"app": "web"} if labels is None else labels},
            "spec": {"containers": [{"name": "main", "ports": ports}]}}


class TestHttp2Reason:
    @pytest.mark.parametrize("port, reason", [
        ({"name": "http2", "port": 80}, "name http2"),
        ({"name": "http2-web", "port": 80}, "name http2-web"),
        ({"name": "HTTP2", "port": 80}, "name HTTP2"),
        ({"name": "web", "appProtocol": "http2"}, "appProtocol http2"),
        ({"name": "web", "appProtocol": "kubernetes.io/h2c"}, "appProtocol kubernetes.io/h2c"),
        ({"name": "http", "appProtocol": "http"}, None),
        ({"name": "grpc"}, None),
        ({"port": 80}, None),
        ({"name": "web-http2"}, None),
    ])
    def test_reason(self, port, reason):
        assert bc._http2_reason(port) == reason


class TestCheckApp:
    def test_good_backend(self):
        sources = bc._pod_sources("shop", [pod("web-1", [{"name": "http", "containerPort": 80}])], [])
        assert bc._check_app(APP, {"web": service([{"name": "http", "port": 8000}])}, sources) == []

    def test_missing_service(self):
        [error] = bc._check_app(APP, {}, [])
        assert error == ("app web: Service shop/web not found: create it, or set service/namespace to an "
                         "existing Service")

    def test_port_not_on_service(self):
        [error] = bc._check_app(APP, {"web": service([{"name": "http", "port": 80}, {"name": "m", "port": 9090}])},
                                [])
        assert error == "app web: Service shop/web has no port 8000 (ports: 80, 9090): set port to one of them"

    def test_http2_on_any_service_port(self):
        svc = service([{"name": "http", "port": 8000}, {"name": "admin", "port": 9000, "appProtocol": "http2"}])
        [error] = bc._check_app(APP, {"web": svc}, [])
        assert error.startswith("app web: Service shop/web port 9000 declares HTTP/2 (appProtocol http2)")

    def test_http2_on_container_port_of_selected_pods_reported_once(self):
        pods = [pod("web-%d" % i, [{"name": "http2-web", "containerPort": 80}]) for i in range(3)]
        pods.append(pod("other", [{"name": "http2", "containerPort": 81}], labels={"app": "other"}))
        sources = bc._pod_sources("shop", pods, [])
        [error] = bc._check_app(APP, {"web": service([{"name": "http", "port": 8000}])}, sources)
        assert error.startswith("app web: Pod shop/web-0 container main port 80 declares HTTP/2 (name http2-web)")

    def test_service_without_selector_has_no_pods_to_check(self):
        sources = bc._pod_sources("shop", [pod("web-1", [{"name": "http2", "containerPort": 80}])], [])
        assert bc._check_app(APP, {"web": service([{"name": "http", "port": 8000}], selector={})}, sources) == []

    def test_planned_deployment_template_is_checked(self):
        deployment = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
                      "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                                            "spec": {"containers": [{"name": "main", "ports": [
                                                {"name": "http2", "containerPort": 80}]}]}}}}
        sources = bc._pod_sources("shop", [], [deployment])
        [error] = bc._check_app(APP, {"web": service([{"name": "http", "port": 8000}])}, sources)
        assert "Deployment shop/web (pod template) container main port 80" in error

    def test_every_message_is_one_line(self):
        svc = service([{"name": "http2", "port": 7000}])
        errors = bc._check_app(APP, {"web": svc}, bc._pod_sources("shop", [pod("p", [{"name": "http2"}])], []))
        assert len(errors) == 3 and all("\n" not in e for e in errors)


class TestOwned:
    def test_foreign_object_of_the_same_name_is_refused(self):
        owned = [{"api_version": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "namespace": "shop", "name": "web"},
                 {"api_version": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "namespace": "shop", "name": "new"},
                 {"api_version": "gateway.networking.k8s.io/v1", "kind": "Gateway", "namespace": "eg", "name": "apps"}]
        listed = {("HTTPRoute", "shop"): {"web": {"metadata": {"name": "web", "labels": {"team": "x"}}}},
                  ("Gateway", "eg"): {"apps": {"metadata": {"name": "apps", "labels": {
                      "app.kubernetes.io/managed-by": "teg.istio"}}}}}
        [error] = bc._owned_errors(owned, listed)
        assert error.startswith("HTTPRoute shop/web exists and is not managed by teg.istio")
