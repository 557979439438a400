"""site.yml and teardown.yml on a mesh its owners already run, as a platform team meets it (issue #26):

- Istio installed by Helm with the owners' values, on a revision with a revision tag (release istiod-stable:
  revision stable, meshConfig.accessLogFile, a pilot.env entry; the tag default points at stable, as
  `istioctl tag set default --revision stable` leaves it);
- the owners' own mesh-wide STRICT PeerAuthentication;
- app namespace httpbin already in the mesh (istio-injection=enabled), app namespace shop on a revision
  (istio.io/rev=stable), namespace legacy opted out (istio-injection=disabled);
- the owners' own values on the fields teg_istio_prep changes: appProtocol grpc on Service envoy-gateway's port
  18000, and on the EnvoyProxy the collection annotates (current: TEG's, which the GatewayClass references; legacy:
  one of theirs named as the collection's would be) the pod annotation traffic.sidecar.istio.io/includeInboundPorts
  "8080" beside one of theirs the collection does not set.

site.yml with the default variables changes nothing the owners set beyond what the procedure needs (the owners'
release keeps its values and revision, the revisioned namespace gets no second label, the owners' STRICT policy is
left as it is); a rerun writes nothing; teardown.yml, cut off by the API server's death half-way through giving the
owners' settings back and then run again, gives the cluster back as it was before site.yml, every kind
of tests/integration/snapshots.py compared field by field, restarts included (TEG's Deployments restarted, back
without sidecars; none of the owners' restarted); a second teardown writes nothing. An app in the
opted-out namespace is refused in one line before any write, and enrolled when the declaration names it; teardown
gives istio-injection=disabled back.

The tests of this module depend on each other's order (pytest runs them top to bottom)."""

import json

import pytest

import faults
from conftest import JSON_CALLBACK, REPO, PlaybookRun, assert_one_line_failure, load_yaml, playbook_command, task_results
from owners import helm, install_owners_istio
from snapshots import differences_apart_from_restarts, restarted, sidecars, snapshot

OWNERS_ISTIOD_VALUES = {"revision": "stable", "meshConfig": {"accessLogFile": "/dev/stdout"},
                        "pilot": {"env": {"OWNERS_SETTING": "kept"}}}
NAMESPACES = {"httpbin": {"istio-injection": "enabled"}, "shop": {"istio.io/rev": "stable"},
              "legacy": {"istio-injection": "disabled"}}
SHOP = {"name": "shop", "namespace": "shop", "service": "shop", "port": 8000, "hostnames": ["shop.example.com"],
        "path_prefix": "/shop"}
LEGACY = {"name": "legacy", "namespace": "legacy", "service": "legacy", "port": 8000,
          "hostnames": ["legacy.example.com"], "path_prefix": "/legacy"}
HTTPBIN = {"name": "httpbin", "namespace": "httpbin", "service": "httpbin", "port": 8000,
           "hostnames": ["www.example.com"], "path_prefix": "/httpbin"}
SITE = {"expose_app_apps": [HTTPBIN, SHOP], "strict_mtls_mesh_namespaces": ["envoy-gateway-system", "httpbin", "shop"]}
PRIOR = "teg.istio/prior"
TEG_NS = "envoy-gateway-system"
INBOUND = "traffic.sidecar.istio.io/includeInboundPorts"
OWNERS_POD_ANNOTATIONS = {INBOUND: "8080", "team.example.com/owner": "edge"}
XDS_FIELD = "/spec/ports/[port=18000]/appProtocol"
RATELIMIT_FIELD = "/spec/ports/[port=8081]/appProtocol"
ANNOTATIONS_FIELD = "/spec/provider/kubernetes/envoyDeployment/pod/annotations/"
TEG_DEPLOYMENTS = sorted(f"{TEG_NS}/{name}" for name in load_yaml(
    REPO / "roles" / "teg_restart" / "defaults" / "main.yml")["teg_restart_deployments"])


def _assert_given_back(cluster, before):
    """The cluster after teardown is as `before` (the owners' state before site.yml), restarts included: TEG's
    Deployments were restarted (into the mesh and out of it), their pods without sidecars; none of the owners'."""
    after = snapshot(cluster)
    assert restarted(before, after) == TEG_DEPLOYMENTS
    assert sidecars(cluster, TEG_NS) == {name: {False} for name in TEG_DEPLOYMENTS}
    assert differences_apart_from_restarts(after, before, TEG_DEPLOYMENTS) == []


def _kubectl_apply(cluster, objects):
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def _app(namespace):
    """A Service and its Deployment, as an app team has them (not the collection's)."""
    labels = {"app": namespace}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": namespace, "namespace": namespace},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 8000, "targetPort": 80}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": namespace, "namespace": namespace},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [{"name": "app", "image": "docker.io/library/nginx:1.27",
                                                        "ports": [{"name": "http", "containerPort": 80}]}]}}}},
    ]


@pytest.fixture(scope="module")
def owners(cluster):
    """The owners' mesh on a fresh cluster, and the state of every kind before site.yml."""
    cluster.localcp("reset")
    install_owners_istio(cluster, "istiod-stable", OWNERS_ISTIOD_VALUES)
    served = cluster.kubectl("api-resources", "--api-group=security.istio.io", "-o", "name").stdout
    assert "peerauthentications" in served, served
    version_pa = "security.istio.io/v1" if cluster.matrix == "current" else "security.istio.io/v1beta1"
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
               for ns, labels in NAMESPACES.items()]
    # The revision tag default (what istio-injection=enabled resolves to) points at stable; istioctl's tag webhook
    # carries these labels (its webhooks are left out: nothing here calls them).
    objects.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                    "metadata": {"name": "istio-revision-tag-default",
                                 "labels": {"istio.io/tag": "default", "istio.io/rev": "stable", "app": "sidecar-injector"}}})
    objects.append({"apiVersion": version_pa, "kind": "PeerAuthentication",
                    "metadata": {"name": "default", "namespace": "istio-system", "labels": {"team": "mesh-owners"}},
                    "spec": {"mtls": {"mode": "STRICT"}}})
    # The platform team's own Gateway, which the last test attaches the routes to.
    gateway_api = "gateway.networking.k8s.io/v1" if cluster.matrix == "current" else "gateway.networking.k8s.io/v1beta1"
    objects.append({"apiVersion": gateway_api, "kind": "Gateway", "metadata": {"name": "edge", "namespace": TEG_NS},
                    "spec": {"gatewayClassName": "teg", "listeners": [
                        {"name": "web", "port": 8080, "protocol": "HTTP",
                         "allowedRoutes": {"namespaces": {"from": "All"}}}]}})
    _kubectl_apply(cluster, objects)
    _kubectl_apply(cluster, _app("shop") + _app("legacy"))
    # The owners' values on the fields teg_istio_prep changes on objects it did not create.
    xds = _get(cluster, "service", "envoy-gateway")
    [index] = [i for i, p in enumerate(xds["spec"]["ports"]) if p["port"] == 18000]
    cluster.kubectl("-n", TEG_NS, "patch", "service", "envoy-gateway", "--type=json", "-p", json.dumps(
        [{"op": "add", "path": "/spec/ports/%d/appProtocol" % index, "value": "grpc"}]))
    owners_pod = {"provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {"pod": {
        "annotations": OWNERS_POD_ANNOTATIONS}}}}}
    if cluster.matrix == "current":
        cluster.kubectl("-n", TEG_NS, "patch", "envoyproxy", _envoyproxy(cluster), "--type=merge", "-p",
                        json.dumps({"spec": owners_pod}))
    else:
        # TEG's chart references no EnvoyProxy there: create mode finds the owners' one of its name and annotates it.
        _kubectl_apply(cluster, [{"apiVersion": "config.gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
                                  "metadata": {"name": _envoyproxy(cluster), "namespace": TEG_NS}, "spec": owners_pod}])
    yield {"before": snapshot(cluster)}
    # The owners' mesh goes with this file (reset removes Helm's webhooks, not the tag made without Helm).
    cluster.kubectl("delete", "mutatingwebhookconfiguration", "istio-revision-tag-default", "--ignore-not-found")
    cluster.localcp("reset")


def _get(cluster, kind, name):
    return json.loads(cluster.kubectl("-n", TEG_NS, "get", kind, name, "-o", "json").stdout)


def _app_protocols(cluster, service):
    return dict((p["port"], p.get("appProtocol")) for p in _get(cluster, "service", service)["spec"]["ports"])


def _envoyproxy(cluster):
    """The owners' EnvoyProxy teg_istio_prep annotates: TEG's, which the GatewayClass references (current), or one
    of the name of teg_istio_prep_envoyproxy_name found there (legacy: Envoy Gateway v0.5, no reference)."""
    return "teg-envoy-proxy" if cluster.matrix == "current" else "data-plane-sidecars"


def _pod_annotations(cluster):
    return _get(cluster, "envoyproxy", _envoyproxy(cluster))["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"][
        "annotations"]


def _namespace(cluster, name):
    return json.loads(cluster.kubectl("get", "namespace", name, "-o", "json").stdout)["metadata"]


def test_site_changes_nothing_the_owners_set_beyond_what_the_procedure_needs(play, cluster, owners):
    run = play("site.yml", extra_vars=SITE)
    assert run.rc == 0, run.output[-4000:]
    owners["applied"] = snapshot(cluster)
    # The owners' Istio is used as it is: same revision, same values.
    assert json.loads(helm(cluster, "get", "values", "istiod-stable", "-n", "istio-system", "-o", "json")) == \
        OWNERS_ISTIOD_VALUES
    history = json.loads(helm(cluster, "history", "istiod-stable", "-n", "istio-system", "-o", "json"))
    assert [h["revision"] for h in history] == [1], history
    # Namespaces already in the mesh keep their labels, and get no record: nothing of theirs was changed.
    for name in ("httpbin", "shop", "legacy"):
        meta = _namespace(cluster, name)
        mesh_labels = dict((k, v) for k, v in meta["labels"].items() if k in ("istio-injection", "istio.io/rev"))
        assert mesh_labels == NAMESPACES[name], (name, meta["labels"])
        assert PRIOR not in (meta.get("annotations") or {}), (name, meta)
    # The TEG namespace was not in the mesh: labelled the way this mesh enrols (istio-injection=enabled resolves to
    # stable through the tag), and the label's absence recorded for teardown.
    teg = _namespace(cluster, "envoy-gateway-system")
    assert teg["labels"]["istio-injection"] == "enabled"
    assert json.loads(teg["annotations"][PRIOR]) == {"/metadata/labels/istio-injection": [None, "enabled"]}
    # The owners' STRICT policy is left exactly as it was.
    key = ("PeerAuthentication", "istio-system", "default")
    assert owners["applied"][key] == owners["before"][key]
    # The fields changed on TEG's objects, each recorded on its object with the owners' value (or its absence).
    assert _app_protocols(cluster, "envoy-gateway")[18000] == "tls"
    assert json.loads(_get(cluster, "service", "envoy-gateway")["metadata"]["annotations"][PRIOR]) == {
        XDS_FIELD: ["grpc", "tls"]}
    assert _app_protocols(cluster, "envoy-ratelimit")[8081] == "tls"
    assert json.loads(_get(cluster, "service", "envoy-ratelimit")["metadata"]["annotations"][PRIOR]) == {
        RATELIMIT_FIELD: [None, "tls"]}
    annotations = _pod_annotations(cluster)
    assert annotations[INBOUND] == "" and annotations["team.example.com/owner"] == "edge"
    record = json.loads(_get(cluster, "envoyproxy", _envoyproxy(cluster))["metadata"]["annotations"][PRIOR])
    assert record[ANNOTATIONS_FIELD + INBOUND.replace("/", "~1")] == ["8080", ""]
    # Every other annotation recorded is one the collection added (the drain's): absent before.
    assert all(value[0] is None for field, value in record.items() if not field.endswith("includeInboundPorts"))


def test_a_rerun_writes_nothing(play):
    run = play("site.yml", extra_vars=SITE)
    assert run.rc == 0, run.output[-4000:]
    assert run.writes == [], run.describe_writes()


def test_an_opted_out_namespace_is_refused_before_any_write_unless_the_declaration_names_it(play, cluster):
    declared = dict(SITE, expose_app_apps=[HTTPBIN, SHOP, LEGACY])
    run = play("site.yml", extra_vars=declared, env=JSON_CALLBACK)
    assert_one_line_failure(run, ["namespace legacy is opted out of the mesh by its owners (istio-injection=disabled)"],
                            ["expose_app_enrol_opted_out: [legacy]"])
    assert run.writes == [], run.describe_writes()
    check = play("site.yml", extra_vars=dict(declared, expose_app_enrol_opted_out=["legacy"]), check=True, diff=True,
                 env=JSON_CALLBACK)
    assert check.rc == 0 and check.writes == [], check.describe_writes()
    [summary] = task_results(check, "Say which of the owners' settings this run changes, and what teardown gives back")
    assert summary["msg"] == ["Settings of the owners that this run would change:",
                              'Namespace legacy: label istio-injection "disabled" -> "enabled" (teardown gives back '
                              '"disabled")']
    run = play("site.yml", extra_vars=dict(declared, expose_app_enrol_opted_out=["legacy"]))
    assert run.rc == 0, run.output[-4000:]
    meta = _namespace(cluster, "legacy")
    assert meta["labels"]["istio-injection"] == "enabled"
    assert json.loads(meta["annotations"][PRIOR]) == {"/metadata/labels/istio-injection": ["disabled", "enabled"]}


def test_teardown_cut_off_mid_way_then_rerun_gives_the_owners_back_exactly_what_they_had(play, cluster, owners):
    """--check says what teardown gives back; then teardown.yml with the API server killed at its first write after
    the one that gave back the owners' appProtocol on Service envoy-gateway (faults.WriteGate): the run fails in one
    line, some of the owners' settings given back and others still recorded on their objects; a rerun gives back the
    rest, field by field, and a second teardown writes nothing."""
    declared = dict(SITE, expose_app_apps=[HTTPBIN, SHOP, LEGACY], expose_app_enrol_opted_out=["legacy"])
    check = play("teardown.yml", extra_vars=declared, check=True, env=JSON_CALLBACK)
    assert check.rc == 0 and check.writes == [], check.describe_writes() + [check.stdout[-4000:]]
    [summary] = task_results(check, "Say which of the owners' settings this teardown gives back")
    assert 'Namespace legacy: given back label istio-injection "disabled"' in summary["msg"], summary["msg"]

    given_back = "UPDATE services %s/envoy-gateway" % TEG_NS
    cmd = playbook_command("teardown.yml", declared)
    rc, stdout, stderr, cut_at, admitted = faults.cut_off(
        cluster, cmd, dict(cluster.env, **JSON_CALLBACK), REPO, lambda request, admitted: given_back in admitted)
    assert_one_line_failure(PlaybookRun(rc, stdout, stderr, []), cause=["cannot reach the Kubernetes API server"],
                            fix=["that the API server is running"])
    assert _app_protocols(cluster, "envoy-gateway")[18000] == "grpc", (cut_at, admitted)
    recorded = {name: PRIOR in (meta.get("annotations") or {}) for name, meta in (
        ("Service envoy-gateway", _get(cluster, "service", "envoy-gateway")["metadata"]),
        ("Service envoy-ratelimit", _get(cluster, "service", "envoy-ratelimit")["metadata"]),
        ("EnvoyProxy", _get(cluster, "envoyproxy", _envoyproxy(cluster))["metadata"]),
        ("Namespace " + TEG_NS, _namespace(cluster, TEG_NS)))}
    assert not recorded["Service envoy-gateway"] and any(recorded.values()), (recorded, cut_at, admitted)

    run = play("teardown.yml", extra_vars=declared, env=JSON_CALLBACK)
    assert run.rc == 0, run.stdout[-4000:]
    # The owners' values on the exact fields the collection changed, field by field, and no record left.
    assert _app_protocols(cluster, "envoy-gateway")[18000] == "grpc"
    assert _app_protocols(cluster, "envoy-ratelimit")[8081] is None
    assert _pod_annotations(cluster) == OWNERS_POD_ANNOTATIONS
    for kind, name in (("service", "envoy-gateway"), ("service", "envoy-ratelimit"), ("envoyproxy", _envoyproxy(cluster))):
        assert PRIOR not in (_get(cluster, kind, name)["metadata"].get("annotations") or {}), (kind, name)
    _assert_given_back(cluster, owners["before"])
    again = play("teardown.yml", extra_vars=declared)
    assert again.rc == 0 and again.writes == [], again.describe_writes()


def test_routes_on_the_platform_team_s_gateway_with_strict_left_to_the_mesh_s_owners(play, cluster, owners, k8s):
    """Steps 1 to 5 only (teg_istio_skip_steps: the owners manage the mesh-wide policy), the routes attached to the
    owners' Gateway edge: no Gateway of the collection's, the owners' Gateway and policy untouched, verify (site.yml's
    step 7) passes without checking the policy, a rerun writes nothing, and teardown leaves the cluster as before."""
    declared = dict(SITE, teg_istio_skip_steps=["strict_mtls"], expose_app_gateway_create=False,
                    expose_app_gateway_name="edge",
                    expose_app_apps=[dict(app, section_name="web") for app in SITE["expose_app_apps"]])
    run = play("site.yml", extra_vars=declared)
    assert run.rc == 0, run.output[-4000:]
    applied = snapshot(cluster)
    assert [key for key in applied if key[0] == "Gateway"] == [("Gateway", TEG_NS, "edge")]
    assert applied[("Gateway", TEG_NS, "edge")] == owners["before"][("Gateway", TEG_NS, "edge")]
    key = ("PeerAuthentication", "istio-system", "default")
    assert applied[key] == owners["before"][key]
    routes = [v for k, v in applied.items() if k[0] == "HTTPRoute"]
    assert sorted(r["spec"]["parentRefs"][0]["name"] + "/" + r["spec"]["parentRefs"][0]["sectionName"]
                  for r in routes) == ["edge/web", "edge/web"]
    again = play("site.yml", extra_vars=declared)
    assert again.rc == 0 and again.writes == [], again.describe_writes()
    down = play("teardown.yml", extra_vars=declared)
    assert down.rc == 0, down.output[-4000:]
    _assert_given_back(cluster, owners["before"])
