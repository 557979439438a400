# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What more than one teg.istio module needs: the API client the kubernetes.core way, discovery of the
API versions a cluster serves, reads that tolerate absence, and API and connection errors turned into
one-line messages that name the object and the fix. The rules that need no client live in names.py,
merge_patch.py and rollout.py, which import nothing heavy, so that the pure plans and their unit tests
do not load the Kubernetes client."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os

try:
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError
except ImportError:  # reported by AnsibleK8SModule's own dependency check
    DynamicApiError = NotFoundError = Exception

try:
    from urllib3.exceptions import HTTPError as Urllib3HTTPError
except ImportError:
    Urllib3HTTPError = OSError

try:
    import yaml
    _YAML_ERRORS = (yaml.YAMLError,)
except ImportError:  # reported by AnsibleK8SModule's own dependency check
    _YAML_ERRORS = ()

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.teg.istio.plugins.module_utils.names import TegIstioError, api_error_line  # noqa: F401  pylint: disable=unused-import


# The play host's variables that playbooks/site.yml, verify.yml and teardown.yml give the connection options of
# every Kubernetes call (module_defaults group/teg.istio.istio; README.md, "Many clusters"): option -> variable.
HOST_VARIABLES = (("kubeconfig", "teg_istio_kubeconfig"), ("context", "teg_istio_context"), ("host", "teg_istio_host"),
                  ("api_key", "teg_istio_api_key"), ("ca_cert", "teg_istio_ca_cert"),
                  ("validate_certs", "teg_istio_validate_certs"))


def connection_variables(params, defined):
    """{option: host variable} for the connection options set in `params` whose host variable is among `defined`
    (the variable names the play host has): what a connection message names so that a fleet run says which
    inventory variable to fix instead of K8S_AUTH_*."""
    return dict((option, variable) for option, variable in HOST_VARIABLES
                if variable in defined and params.get(option) not in (None, ""))


def _server_hint(params, variables):
    """Where to look when the API server cannot be reached: the host variable that set the address or the
    kubeconfig, else K8S_AUTH_HOST / the kubeconfig."""
    if "host" in variables:
        return "check %s (%s)" % (variables["host"], params["host"])
    if "kubeconfig" in variables:
        context = " (context %s, %s)" % (params["context"], variables["context"]) if "context" in variables else ""
        return "check the server address in %s (%s)%s" % (variables["kubeconfig"], params["kubeconfig"], context)
    return "check K8S_AUTH_HOST / the kubeconfig server address"


def api_error_message(exc, action, what, params=None, variables=None):
    """One line for an API failure while doing `action` ("patch", "read", ...) to `what`; `variables`
    (connection_variables) names the host variables that set the connection options in `params`."""
    status = getattr(exc, "status", None)
    if isinstance(exc, (Urllib3HTTPError, OSError)) and status not in (400, 401, 403, 404, 422):
        status = None
    variables = variables or {}
    credentials = "%s / %s" % (variables.get("api_key", "K8S_AUTH_API_KEY"), variables.get("kubeconfig", "the kubeconfig"))
    return api_error_line(status, _api_reason(exc) if status is not None else _first_line(exc), action, what,
                          credentials=credentials, server=_server_hint(params or {}, variables))


def connect(module):
    """The API client the kubernetes.core way (K8S_AUTH_*, kubeconfig, context, module_defaults), with a
    connection settings problem (no kubeconfig, a context it does not have) as one line naming the
    cause and the fix."""
    # The host variables behind the options, where the in-process action knows them (plugin_utils/_inprocess.py).
    variables = getattr(module, "connection_variables", None) or {}
    try:
        # The client's discovery asks the API server for its version when the client is built.
        with api_errors("read", "its version and API groups"):
            return get_api_client(module)
    except CoreException as exc:
        raise TegIstioError(connection_error_message(exc, module.params, variables)) from exc


def _kubeconfig_source(params, variables=None):
    """(path or None, how it was chosen) of the kubeconfig the client loads, as kubernetes.core picks it."""
    kubeconfig = params.get("kubeconfig")
    option = (variables or {}).get("kubeconfig", "the kubeconfig option")
    if isinstance(kubeconfig, dict):
        return None, "%s (a dict)" % option
    if kubeconfig:
        return kubeconfig, option
    for variable in ("K8S_AUTH_KUBECONFIG", "KUBECONFIG"):
        if os.environ.get(variable):
            # KUBECONFIG may list several files; the first one names it well enough for a message.
            return os.environ[variable].split(os.pathsep)[0], variable
    return os.path.expanduser("~/.kube/config"), "the default location"


def _context_names(path):
    try:
        with open(path) as handle:
            doc = yaml.safe_load(handle) or {}
        return sorted(c.get("name") for c in doc.get("contexts") or [] if c.get("name"))
    except (OSError, AttributeError, ValueError, TypeError) + _YAML_ERRORS:
        return []


def connection_error_message(exc, params, variables=None):
    """One line for a failure to build the API client from the connection settings in `params` (a
    module's parameters) and the environment: what is wrong, with which file, and what to set; `variables`
    (connection_variables) names the host variables that set the options."""
    text = str(exc)
    text = text.split("Could not create API client: ", 1)[-1]
    variables = variables or {}
    path, chosen = _kubeconfig_source(params, variables)
    context = params.get("context") or os.environ.get("K8S_AUTH_CONTEXT")
    where = "kubeconfig %s (from %s)" % (path, chosen) if path else chosen
    kubeconfig_setting = variables.get("kubeconfig", "K8S_AUTH_KUBECONFIG")
    if context and "Expected object with name %s in" % context in text and "contexts" in text:
        names = _context_names(path) if path else []
        return ("context %s is not in %s: set %s to one of its contexts (%s), "
                "or leave it unset to use the kubeconfig's current context"
                % (context, where, variables.get("context", "K8S_AUTH_CONTEXT (or the context option)"),
                   ", ".join(names) or "it has none"))
    if "No configuration found" in text or "File does not exist" in text or (path and not os.path.exists(path)):
        if "kubeconfig" in variables:
            return ("no Kubernetes connection settings: %s does not exist or is empty; set %s to a kubeconfig file, "
                    "or teg_istio_host with teg_istio_api_key" % (where, kubeconfig_setting))
        return ("no Kubernetes connection settings: %s does not exist or is empty, and K8S_AUTH_HOST is not set; "
                "set K8S_AUTH_KUBECONFIG (or KUBECONFIG) to a kubeconfig file, or K8S_AUTH_HOST with "
                "K8S_AUTH_API_KEY" % where)
    return ("cannot load the Kubernetes connection settings from %s: %s; fix that file or point %s "
            "at another one" % (where, _first_line(text), kubeconfig_setting))


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


# Aggregated discovery (Kubernetes 1.26 beta, 1.30 GA): one request returns every group, its versions in
# order of preference, and the resources each serves, where the classic discovery asks once per group and
# once per group version. Older API servers answer with a plain APIGroupList, and the classic requests are
# used then.
_AGGREGATED_DISCOVERY = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                         "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")


class Discovery(object):
    """What the API server serves, read fresh (not the client's discovery cache), so that CRDs installed a
    moment ago by an earlier task are seen: one aggregated discovery request where the server supports
    it, else a request per group and group version, made as they are asked for."""

    def __init__(self, client):
        self.client = client
        self._groups = None
        response = client.client.request("GET", "/apis", serialize=False,
                                         header_params={"Accept": _AGGREGATED_DISCOVERY})
        doc = json.loads(response.data)
        if doc.get("kind") == "APIGroupDiscoveryList":
            self._groups = dict(
                (item["metadata"]["name"],
                 [(v["version"], set(r["resource"] for r in v.get("resources") or [])) for v in item.get("versions") or []])
                for item in doc.get("items") or [])

    def served_versions(self, group):
        """The versions of `group` the server serves, preferred first; [] when the group is absent."""
        if self._groups is not None:
            return [version for version, _resources in self._groups.get(group, [])]
        return served_versions(self.client, group)

    def resource_served(self, group, version, plural):
        if self._groups is not None:
            return any(v == version and plural in resources for v, resources in self._groups.get(group, []))
        return resource_served(self.client, group, version, plural)

    def pick_version(self, group, plural, candidates):
        """The first of `candidates` (e.g. ("v1", "v1beta1")) under which `group` serves `plural`."""
        for version in candidates:
            if self.resource_served(group, version, plural):
                return version
        return None


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


def envoyproxy_group_version(client, discovery=None):
    """(group, version) of the API that serves EnvoyProxy, or (None, None) when no group does."""
    discovery = discovery or Discovery(client)
    for group in ENVOYPROXY_GROUPS:
        version = discovery.pick_version(group, "envoyproxies", discovery.served_versions(group))
        if version:
            return group, version
    return None, None


class ConnectionSettingsError(TegIstioError):
    """An API request that failed because of the connection settings (the server cannot be reached, the
    credentials were rejected), wherever in a module it happened. Its message names K8S_AUTH_*; the runner of
    the module, which alone knows the play host's variables behind the options (plugin_utils/_inprocess.py),
    words it again with `message_for`."""

    def __init__(self, exc, action, what):
        self.cause, self.action, self.what = exc, action, what
        super(ConnectionSettingsError, self).__init__(api_error_message(exc, action, what))

    def message_for(self, params, variables):
        return api_error_message(self.cause, self.action, self.what, params, variables)


def _unreachable(exc):
    """True when the request never got an HTTP answer the other branches of api_error_message word."""
    status = getattr(exc, "status", None)
    return status not in (401, 403, 404, 400, 422) and (isinstance(exc, (Urllib3HTTPError, OSError)) or status is None)


def _is_connection_failure(exc):
    return getattr(exc, "status", None) == 401 or _unreachable(exc)


@contextlib.contextmanager
def api_errors(action, what):
    """Turn a failed API request inside the block into TegIstioError carrying the one-line message of
    api_error_message, so that a module fails naming the object and the fix instead of a traceback."""
    try:
        yield
    except (DynamicApiError, Urllib3HTTPError, OSError) as exc:
        if _is_connection_failure(exc):
            raise ConnectionSettingsError(exc, action, what) from exc
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
