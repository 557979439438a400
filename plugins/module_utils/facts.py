# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a cluster serves for lifting TEG into Istio, read in one pass: shared by the modules
cluster_facts (which returns it) and mesh_verify (which checks against it)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import gzip
import json

from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    Discovery,
    TegIstioError,
    api_errors,
    envoyproxy_group_version,
    get_or_none,
)
from ansible_collections.teg.istio.plugins.module_utils.names import describe, image_version, referenced_envoyproxy

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
# Field paths in the EnvoyProxy CRD schema that decide what the roles may write.
POD_ANNOTATIONS_PATH = ("spec", "provider", "kubernetes", "envoyDeployment", "pod", "annotations")
ROUTING_TYPE_PATH = ("spec", "routingType")
# Envoy Gateway v1.0 and later drain their Envoy pods on shutdown, as this part of the EnvoyProxy sets.
SHUTDOWN_PATH = ("spec", "shutdown")


def _schema_has(schema, path):
    """True when the openAPIV3Schema `schema` declares the object field path `path`."""
    node = schema or {}
    for key in path:
        node = (node.get("properties") or {}).get(key)
        if node is None:
            return False
    return True


def _served_schema(crd, version):
    """The openAPIV3Schema of `version` in a CustomResourceDefinition, {} when absent."""
    for entry in (crd or {}).get("spec", {}).get("versions", []):
        if entry.get("name") == version and entry.get("served", True):
            return (entry.get("schema") or {}).get("openAPIV3Schema") or {}
    return {}


def _pick_istiod(deployments):
    """The istiod Deployment to report among those labelled app=istiod: the default revision first."""
    if not deployments:
        return None

    def revision(dep):
        return ((dep.get("metadata") or {}).get("labels") or {}).get("istio.io/rev") or "default"

    chosen = sorted(deployments, key=lambda d: (revision(d) != "default", d["metadata"].get("namespace", ""),
                                                d["metadata"]["name"]))[0]
    containers = ((chosen.get("spec") or {}).get("template", {}).get("spec", {}) or {}).get("containers") or []
    return {
        "namespace": chosen["metadata"].get("namespace"),
        "name": chosen["metadata"]["name"],
        "version": image_version(containers[0].get("image")) if containers else None,
        "revision": revision(chosen),
    }


def _parameters_ref(gatewayclass):
    ref = (gatewayclass.get("spec") or {}).get("parametersRef")
    if not ref:
        return None
    return {key: ref.get(key) for key in ("group", "kind", "name", "namespace")}


def _get_json(client, path, **params):
    # Unserialized: the client's ResourceInstance needs a "kind", which /version does not have.
    response = client.client.request("GET", path, serialize=False, **params)
    return json.loads(response.data)


def _envoyproxy_facts(client, discovery, schema):
    """The EnvoyProxy API; with `schema`, also the features of its CRD schema (None when not read: the
    CRD of EnvoyProxy is large, so only the plans that decide by a feature read it)."""
    with api_errors("discover", "the EnvoyProxy API"):
        group, version = envoyproxy_group_version(client, discovery)
    if not group:
        return None
    facts = {"api_version": "%s/%s" % (group, version), "group": group, "pod_annotations": None,
             "routing_type": None, "shutdown": None}
    if schema:
        crd_name = "envoyproxies.%s" % group
        with api_errors("read", describe("CustomResourceDefinition", crd_name)):
            crd = _get_json(client, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/%s" % crd_name)
        served = _served_schema(crd, version)
        facts.update(pod_annotations=_schema_has(served, POD_ANNOTATIONS_PATH),
                     routing_type=_schema_has(served, ROUTING_TYPE_PATH), shutdown=_schema_has(served, SHUTDOWN_PATH))
    return facts


def _api_version(discovery, group, plural, candidates):
    with api_errors("discover", "the %s API" % plural):
        version = discovery.pick_version(group, plural, candidates)
    return "%s/%s" % (group, version) if version else None


def _istiod(client):
    with api_errors("list", "Deployments labelled app=istiod in all namespaces"):
        doc = _get_json(client, "/apis/apps/v1/deployments", label_selector="app=istiod")
    return _pick_istiod(doc.get("items") or [])


def _referenced_envoyproxy(client, envoyproxy_api, ref):
    """The EnvoyProxy a GatewayClass parametersRef points at, None when the reference is not to an
    EnvoyProxy of the served group or the object does not exist. An unset namespace means "default",
    as Envoy Gateway reads it (names.referenced_envoyproxy)."""
    target = referenced_envoyproxy(ref, (envoyproxy_api or {}).get("group"))
    if not envoyproxy_api or not target:
        return None
    with api_errors("read", describe("EnvoyProxy", target["name"], target["namespace"])):
        return get_or_none(client, envoyproxy_api["api_version"], "EnvoyProxy", target["name"], target["namespace"])


# Helm 3 keeps every revision of a release as a Secret of this type in the release namespace (its
# default storage driver), labelled owner=helm, name=<release>, version=<revision>, status=<status>;
# the `release` key holds the release as JSON, gzipped, then base64 (pkg/storage/driver/util.go).
_HELM_GZIP_MAGIC = b"\x1f\x8b\x08"

# The labels Helm's storage drivers set on every release record (pkg/storage/driver/util.go); any other label on
# the record is a release label given with --labels.
_HELM_SYSTEM_LABELS = frozenset(["name", "owner", "status", "version", "createdAt", "modifiedAt"])


def read_helm_releases(client, namespace, names):
    """{name: status or None} for each Helm release in `names`: its newest revision in `namespace`, read
    from Helm's release Secrets, in the shape kubernetes.core.helm_info returns as `status` (name,
    namespace, revision, status, chart "<name>-<version>", app_version, updated, values: the
    user-supplied values). One list request instead of a helm process per release, and no helm binary
    needed to find that nothing is to be done."""
    if not names:
        return {}
    # Superseded revisions are history: the newest revision of a release is never superseded.
    selector = "owner=helm,name in (%s),status!=superseded" % ",".join(names)
    with api_errors("list", "the Helm release Secrets of %s in namespace %s" % (", ".join(names), namespace)):
        doc = _get_json(client, "/api/v1/namespaces/%s/secrets" % namespace, label_selector=selector)
    newest = {}
    for secret in doc.get("items") or []:
        labels = secret["metadata"].get("labels") or {}
        try:
            revision = int(labels.get("version"))
        except (TypeError, ValueError):
            continue
        name = labels.get("name")
        if name not in newest or revision > newest[name][0]:
            newest[name] = (revision, secret)
    return {name: _helm_release_status(newest[name][1]) if name in newest else None for name in names}


def _helm_release_status(secret):
    meta = secret["metadata"]
    where = describe("Secret", meta["name"], meta.get("namespace"))
    release_name = (meta.get("labels") or {}).get("name")
    try:
        payload = base64.b64decode(base64.b64decode((secret.get("data") or {})["release"]))
        if payload[:3] == _HELM_GZIP_MAGIC:
            payload = gzip.decompress(payload)
        release = json.loads(payload)
        chart = release["chart"]["metadata"]
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise TegIstioError("%s is not a Helm 3 release this collection can read (%s): check it with "
                            "`helm history %s -n %s`" % (where, exc, release_name, meta.get("namespace")))
    info = release.get("info") or {}
    return {
        "name": release.get("name"),
        "namespace": release.get("namespace"),
        "revision": str(release.get("version")),
        "status": info.get("status"),
        "chart": "%s-%s" % (chart.get("name"), chart.get("version")),
        "app_version": chart.get("appVersion"),
        "updated": info.get("last_deployed"),
        "values": release.get("config") or {},
        # The release's own labels (helm install/upgrade --labels, Helm >= 3.13), kept on its record Secret beside
        # the labels Helm's storage sets itself.
        "labels": dict((k, v) for k, v in (meta.get("labels") or {}).items() if k not in _HELM_SYSTEM_LABELS),
        # How Helm 4 applied it: "ssa" (server-side apply, its default for a new release) or "csa"; None for a
        # release Helm 3 wrote (client-side). Decides how a forced upgrade is forced (_helm.helm_force_args).
        "apply_method": release.get("apply_method"),
    }


def _known_api_version(facts, kind):
    """The served apiVersion of a kind whose API version differs between the flavours, None when the
    cluster does not serve it (or the kind is not one of them)."""
    if kind == "EnvoyProxy":
        return (facts.get("envoyproxy") or {}).get("api_version")
    if kind in ("GatewayClass", "Gateway", "HTTPRoute"):
        return (facts.get("gateway_api") or {}).get("api_version")
    istio = facts.get("istio") or {}
    return {
        "VirtualService": istio.get("virtualservice_api_version"),
        "PeerAuthentication": istio.get("peerauthentication_api_version"),
    }.get(kind)


def read_objects(client, facts, specs):
    """Each spec of `specs` read in this one process, as k8s_info would return it: a dict with
    `resources` (a list, empty when nothing matches or the API is not served) and `api_version`
    (None when not served). A spec names `kind` and either `name` (one object) or nothing/
    `label_selectors` (a list, in `namespace` or in all namespaces); `api_version` may be left out for
    the kinds whose version the flavours differ in. `specs` is a dict keyed by names the caller
    chooses (the result is keyed the same), or a list (the result is in the same order)."""
    if isinstance(specs, dict):
        return dict((key, _read_one(client, facts, spec)) for key, spec in specs.items())
    return [_read_one(client, facts, spec) for spec in specs]


def _read_one(client, facts, spec):
    kind = spec["kind"]
    api_version = spec.get("api_version") or _known_api_version(facts, kind)
    name, namespace = spec.get("name"), spec.get("namespace")
    if not api_version:
        return {"api_version": None, "resources": []}
    if name:
        with api_errors("read", describe(kind, name, namespace)):
            obj = get_or_none(client, api_version, kind, name, namespace)
        resources = [obj] if obj else []
    else:
        selector = ",".join(spec.get("label_selectors") or [])
        where = ("namespace %s" % namespace) if namespace else "all namespaces"
        with api_errors("list", "%ss%s in %s" % (kind, (" labelled " + selector) if selector else "", where)):
            listed = client.get(client.resource(kind, api_version), namespace=namespace,
                                label_selector=selector or None).to_dict()
        resources = listed.get("items") or []
    return {"api_version": api_version, "resources": resources}


# What gather can read; a plan asks only for what it decides by (each part costs requests).
PARTS = frozenset(["version", "envoyproxy", "envoyproxy_schema", "gateway_api", "istio_apis", "istiod"])


def gather(client, gatewayclass=None, namespace=None, parts=PARTS):
    """What the cluster serves, in one discovery request where the server supports it: the parts asked
    for (all of them for cluster_facts), the GatewayClass `gatewayclass` with the EnvoyProxy it
    references, and whether the namespace `namespace` exists. A part not asked for is left out."""
    parts = set(parts)
    if gatewayclass is not None:
        parts |= {"envoyproxy", "gateway_api"}
    with api_errors("discover", "the API groups"):
        discovery = Discovery(client)
    facts = {}
    if "version" in parts:
        with api_errors("read", "the API server version"):
            facts["kubernetes_version"] = _get_json(client, "/version").get("gitVersion")
    if parts & {"envoyproxy", "envoyproxy_schema"}:
        facts["envoyproxy"] = _envoyproxy_facts(client, discovery, "envoyproxy_schema" in parts)
    if "gateway_api" in parts:
        gateway_api = _api_version(discovery, GATEWAY_API_GROUP, "gatewayclasses", ("v1", "v1beta1"))
        facts["gateway_api"] = {"api_version": gateway_api} if gateway_api else None
    if parts & {"istio_apis", "istiod"}:
        facts["istio"] = {}
    if "istio_apis" in parts:
        facts["istio"].update(
            virtualservice_api_version=_api_version(discovery, "networking.istio.io", "virtualservices",
                                                    ("v1", "v1beta1")),
            peerauthentication_api_version=_api_version(discovery, "security.istio.io", "peerauthentications",
                                                        ("v1", "v1beta1")))
    if "istiod" in parts:
        facts["istio"]["istiod"] = _istiod(client)
    if gatewayclass is not None:
        facts["gatewayclass"] = None
        gateway_api = (facts["gateway_api"] or {}).get("api_version")
        if gateway_api:
            with api_errors("read", describe("GatewayClass", gatewayclass)):
                obj = get_or_none(client, gateway_api, "GatewayClass", gatewayclass)
            if obj:
                ref = _parameters_ref(obj)
                facts["gatewayclass"] = {
                    "name": obj["metadata"]["name"],
                    "controller_name": (obj.get("spec") or {}).get("controllerName"),
                    "parameters_ref": ref,
                    "envoyproxy": _referenced_envoyproxy(client, facts["envoyproxy"], ref),
                }
    if namespace is not None:
        with api_errors("read", describe("Namespace", namespace)):
            facts["namespace_exists"] = get_or_none(client, "v1", "Namespace", namespace) is not None
    return facts
