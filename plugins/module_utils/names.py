# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the modules and the roles' plans share: the labels that mark what the collection manages, how an
object is named in messages, the version in an image reference, how a GatewayClass parametersRef is
read, and the error every module and plan raises.

No imports beyond the standard library on purpose: the pure plans and their unit tests use it without
loading the Kubernetes client (cluster.py does)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# Objects the collection creates carry this label, so that a later run (or teardown) finds exactly
# what the collection made and nothing it merely touched.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "teg.istio"
# What expose_app labels its objects with: the app an HTTPRoute serves, and the Gateway they were made for
# (a second Gateway's objects are told apart by these, by expose_app's prune and teardown and by verify).
APP_LABEL = "teg.istio/app"
GATEWAY_LABEL = "teg.istio/gateway"
GATEWAY_NAMESPACE_LABEL = "teg.istio/gateway-namespace"
# The field manager of every patch the collection's modules send, so that the objects' managedFields name
# the collection as the owner of the fields it set.
FIELD_MANAGER = "teg.istio"


class TegIstioError(Exception):
    """A failure whose message is the whole story for the user: one line, object named, fix given.
    `result` holds what the failed task still returns beside the message (what was done before it
    failed)."""

    def __init__(self, message, result=None):
        super(TegIstioError, self).__init__(message)
        self.result = result or {}


def describe(kind, name, namespace=None):
    return "%s %s/%s" % (kind, namespace, name) if namespace else "%s %s" % (kind, name)


def api_error_line(status, reason, action, what, credentials="K8S_AUTH_API_KEY / the kubeconfig",
                   server="check K8S_AUTH_HOST / the kubeconfig server address"):
    """One line for an API failure while doing `action` ("patch", "read", ...) to `what`: `status` is the HTTP
    status the API server answered with and `reason` its message, or `status` None when the API server was not
    reached (or did not answer), `reason` then the client's error. `credentials` and `server` say where the
    token and the server address were set (a fleet host's variables, else the process environment)."""
    if status == 401:
        return ("the API server rejected the credentials (401 Unauthorized) while trying to %s %s: "
                "check the token or client certificate in %s" % (action, what, credentials))
    if status == 403:
        return ("forbidden (403) to %s %s: %s; grant that verb on that resource to the identity running "
                "the playbook (see docs/rbac.md)" % (action, what, reason))
    if status == 404:
        return "%s not found (404) while trying to %s it" % (what, action)
    if status == 422 or status == 400:
        return "the API server refused to %s %s (%s): %s" % (action, what, status, reason)
    if status is None:
        return ("cannot reach the Kubernetes API server to %s %s: %s; %s and that the API server is running"
                % (action, what, reason, server))
    return "failed to %s %s (%s): %s" % (action, what, status, reason)


# The sidecar container Istio's injector adds: a regular container, or a native sidecar (an init container
# with restartPolicy Always) on Kubernetes versions that have them.
# The Envoy pods' annotations by which their sidecar outlives Envoy's drain (teg_istio_prep_sidecar_drain):
# Istio's per-pod switch to a native (restartable init container) sidecar, and its per-pod proxy config.
NATIVE_SIDECAR_ANNOTATION = "sidecar.istio.io/nativeSidecar"
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
DRAIN_ANNOTATIONS = (NATIVE_SIDECAR_ANNOTATION, PROXY_CONFIG_ANNOTATION)
SIDECAR_CONTAINER = "istio-proxy"


def sidecar_container(pod):
    """The pod's istio-proxy container (a container or an init container of that name), or None."""
    spec = (pod or {}).get("spec") or {}
    return next((c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                 if c.get("name") == SIDECAR_CONTAINER), None)


def pod_serving(pod):
    """Whether `pod` takes traffic now or will once ready: neither finished (phase Succeeded or Failed) nor being
    deleted. A rollout that just completed (teg_restart's) leaves its old pods terminating for their grace period,
    out of their Services' ready endpoints, while their replacements carry the sidecar; an evicted pod stays as
    Failed. The mesh checks judge the serving pods only."""
    finished = ((pod or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")
    return not finished and not ((pod or {}).get("metadata") or {}).get("deletionTimestamp")


# Istio's ambient mode (teg_istio_mesh_mode ambient): a namespace (or pod) with this label and value is
# enrolled in the mesh through ztunnel, with no sidecar; the value "none" on a pod opts it out.
# Upstream: istio/istio pkg/config/constants (DataplaneModeLabel, DataplaneModeAmbient).
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
DATAPLANE_MODE_AMBIENT = "ambient"
MESH_MODES = ("sidecar", "ambient")
# On a pod enrolled in the ambient mesh, the istio-cni node agent then redirects only its outbound traffic to
# ztunnel: the Envoy pods' inbound comes from clients outside the mesh in plaintext, which ztunnel refuses under
# STRICT. The agent reads it when the pod is added. Upstream: istio/api annotation/annotations.yaml
# (AmbientBypassInboundCapture), istio/istio cni/pkg/nodeagent/net.go (getPodLevelTrafficOverrides).
BYPASS_INBOUND_CAPTURE_ANNOTATION = "ambient.istio.io/bypass-inbound-capture"
BYPASS_INBOUND_CAPTURE = {BYPASS_INBOUND_CAPTURE_ANNOTATION: "true"}


def ambient_enrolled(pod, namespace_labels):
    """Whether Istio's ambient mode captures `pod`: its own istio.io/dataplane-mode label when it has one
    (ambient, or none to opt out), else its namespace's; a pod with a sidecar is never captured by ztunnel."""
    if sidecar_container(pod) is not None:
        return False
    own = (((pod or {}).get("metadata") or {}).get("labels") or {}).get(DATAPLANE_MODE_LABEL)
    mode = own if own is not None else (namespace_labels or {}).get(DATAPLANE_MODE_LABEL)
    return mode == DATAPLANE_MODE_AMBIENT


def minor_version(text):
    """(major, minor) of a version such as "1.29.6", "v1.34.4", "1.24-dev" or "v1.33.1+k3s"; None when
    it reads as none."""
    match = re.match(r"^v?([0-9]+)\.([0-9]+)", str(text or "").strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def version_older(version, other):
    """True when `version` sorts before `other` (numeric parts only; a pre-release sorts before its release)."""
    def key(v):
        core, dash, pre = v.partition("-")
        return tuple(int(p) for p in core.split(".")) + (0 if dash and pre else 1,)
    return key(version) < key(other)


def image_version(image):
    """The tag of a container image reference without a leading "v" (docker.io/istio/pilot:1.29.6 ->
    "1.29.6"); None when it has no tag (only a digest, or none at all)."""
    if not image:
        return None
    name, colon, tag = image.split("@", 1)[0].rpartition(":")
    # A colon before the last "/" belongs to a registry port (registry:5000/istio/pilot), not a tag.
    if not colon or not name or "/" in tag:
        return None
    return tag[1:] if tag[:1] == "v" and tag[1:2].isdigit() else tag


# Envoy Gateway v1.7 and later read a GatewayClass parametersRef without a namespace as one in
# "default"; v1.1 to v1.6 require the namespace (the GatewayClass is then not Accepted) and up to v1.0
# the EnvoyProxy must also live in Envoy Gateway's own namespace (docs/architecture.md). Every reader
# of a parametersRef in this collection goes through this one function.
PARAMETERS_REF_DEFAULT_NAMESPACE = "default"


def referenced_envoyproxy(ref, group=None):
    """{"name", "namespace"} of the EnvoyProxy a GatewayClass spec.parametersRef (as read, or as
    cluster_facts returns it) points at, an unset namespace read as "default"; None when there is no
    reference, or it is not to an EnvoyProxy (of `group`, when given)."""
    if not ref or ref.get("kind") != "EnvoyProxy" or not ref.get("name"):
        return None
    if group is not None and ref.get("group") != group:
        return None
    return {"name": ref["name"], "namespace": ref.get("namespace") or PARAMETERS_REF_DEFAULT_NAMESPACE}
