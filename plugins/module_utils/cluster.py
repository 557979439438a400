# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What more than one teg.istio module needs: discovery of the API versions a cluster serves, reads
that tolerate absence, and API errors turned into one-line messages that name the object and the fix.
The names and parsing that filter plugins share with modules live in names.py, which imports nothing
heavy."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json

try:
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError
except ImportError:  # reported by AnsibleK8SModule's own dependency check
    DynamicApiError = NotFoundError = Exception

try:
    from urllib3.exceptions import HTTPError as Urllib3HTTPError
except ImportError:
    Urllib3HTTPError = OSError


class TegIstioError(Exception):
    """A failure whose message is the whole story for the user: one line, object named, fix given."""


def api_error_message(exc, action, what):
    """One line for an API failure while doing `action` ("patch", "read", …) to `what`."""
    status = getattr(exc, "status", None)
    reason = _api_reason(exc)
    if status == 401:
        return ("the API server rejected the credentials (401 Unauthorized) while trying to %s %s: "
                "check the token or client certificate in K8S_AUTH_API_KEY / the kubeconfig" % (action, what))
    if status == 403:
        return ("forbidden (403) to %s %s: %s; grant that verb on that resource to the identity running "
                "the playbook (see docs/rbac.md)" % (action, what, reason))
    if status == 404:
        return "%s not found (404) while trying to %s it" % (what, action)
    if status == 422 or status == 400:
        return "the API server refused to %s %s (%s): %s" % (action, what, status, reason)
    if isinstance(exc, (Urllib3HTTPError, OSError)) or status is None:
        return ("cannot reach the Kubernetes API server to %s %s: %s; check K8S_AUTH_HOST / the kubeconfig "
                "server address and that the API server is running" % (action, what, _first_line(exc)))
    return "failed to %s %s (%s): %s" % (action, what, status, reason)


def _api_reason(exc):
    body = getattr(exc, "body", None)
    if body:
        try:
            return json.loads(body).get("message", _first_line(body))
        except (ValueError, AttributeError, TypeError):
            return _first_line(body)
    return _first_line(getattr(exc, "summary", lambda: str(exc))() if hasattr(exc, "summary") else exc)


def _first_line(value):
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text.strip().splitlines()[0] if text.strip() else text


def served_versions(client, group):
    """The versions of an API group the server serves, preferred first; [] when the group is absent.

    A raw discovery request (not the discoverer's cache), so that CRDs installed a moment ago by an
    earlier task are seen."""
    try:
        doc = client.client.request("GET", "/apis/%s" % group)
    except NotFoundError:
        return []
    data = doc.to_dict() if hasattr(doc, "to_dict") else dict(doc)
    preferred = (data.get("preferredVersion") or {}).get("version")
    versions = [v["version"] for v in data.get("versions", [])]
    return sorted(versions, key=lambda v: v != preferred)


def resource_served(client, group, version, plural):
    """True when group/version serves the resource `plural` (e.g. "envoyproxies")."""
    try:
        doc = client.client.request("GET", "/apis/%s/%s" % (group, version))
    except NotFoundError:
        return False
    data = doc.to_dict() if hasattr(doc, "to_dict") else dict(doc)
    return any(r.get("name") == plural for r in data.get("resources", []))


def pick_version(client, group, plural, candidates):
    """The first of `candidates` (e.g. ("v1", "v1beta1")) under which `group` serves `plural`."""
    for version in candidates:
        if resource_served(client, group, version, plural):
            return version
    return None


def get_or_none(client, api_version, kind, name, namespace=None):
    """The object as a dict, or None when it does not exist."""
    resource = client.resource(kind, api_version)
    try:
        return client.get(resource, name=name, namespace=namespace).to_dict()
    except NotFoundError:
        return None


# Envoy Gateway moved EnvoyProxy from config.gateway.envoyproxy.io (up to v0.5) to
# gateway.envoyproxy.io (v0.6, envoyproxy/gateway#1921). A v0.5 cluster serves both groups (the new
# one for its policy CRDs), so the group is chosen by which one serves `envoyproxies`, newest first.
ENVOYPROXY_GROUPS = ("gateway.envoyproxy.io", "config.gateway.envoyproxy.io")


def envoyproxy_group_version(client):
    """(group, version) of the API that serves EnvoyProxy, or (None, None) when no group does."""
    for group in ENVOYPROXY_GROUPS:
        version = pick_version(client, group, "envoyproxies", served_versions(client, group))
        if version:
            return group, version
    return None, None


@contextlib.contextmanager
def api_errors(action, what):
    """Turn a failed API request inside the block into TegIstioError carrying the one-line message of
    api_error_message, so that a module fails naming the object and the fix instead of a traceback."""
    try:
        yield
    except (DynamicApiError, Urllib3HTTPError, OSError) as exc:
        raise TegIstioError(api_error_message(exc, action, what)) from exc


def without_managed_fields(obj):
    """A copy of `obj` without metadata.managedFields: a dry-run or real patch rewrites their
    timestamps, which is bookkeeping, not a change worth showing in a diff."""
    if not obj:
        return obj
    copied = dict(obj)
    if "managedFields" in (copied.get("metadata") or {}):
        copied["metadata"] = {k: v for k, v in copied["metadata"].items() if k != "managedFields"}
    return copied
