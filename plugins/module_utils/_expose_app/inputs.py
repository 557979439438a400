# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the expose_app role's app declarations checked by
themselves (names, hostnames by the Gateway API rules, path prefixes, two apps claiming one host and
prefix, listeners), decidable before anything is read from the cluster.

Pure: no I/O, unit-tested in tests/unit/plugins/module_utils/test_expose_app*.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# Gateway API's Hostname pattern (HTTPRoute spec.hostnames): a lowercase RFC 1123 subdomain, the
# leftmost label alone may be the wildcard "*"; IP addresses are not allowed.
_GATEWAY_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


# Gateway API v1 CEL rules on PathPrefix values, checked here so the error names the app.
_PATH_FORBIDDEN = ("//", "/./", "/../", "%2f", "%2F", "#")


APP_KEYS = ("name", "namespace", "service", "port", "hostnames", "path_prefix", "rewrite", "section_name")


def _hostname_error(host):
    if not isinstance(host, str) or not host:
        return "is empty"
    if len(host) > 253:
        return "is longer than 253 characters"
    if host != host.lower():
        return "has upper-case letters (Gateway API hostnames are lower case)"
    if _IPV4.match(host) or ":" in host:
        return "is an IP address (Gateway API hostnames must be DNS names)"
    if "*" in host and not host.startswith("*."):
        return "has a wildcard that is not the whole leftmost label (only '*.example.com' is allowed)"
    if host == "*" or host.count("*") > 1:
        return "is a bare or repeated wildcard (only '*.example.com' is allowed)"
    if not _GATEWAY_HOSTNAME.match(host):
        return "is not an RFC 1123 DNS name (lower-case letters, digits, '-' and '.')"
    if any(len(label) > 63 for label in host.split(".")):
        return "has a label longer than 63 characters"
    return None


def _path_error(path):
    if not isinstance(path, str) or not path.startswith("/"):
        return "must start with '/'"
    if len(path) > 1024:
        return "is longer than 1024 characters"
    for bad in _PATH_FORBIDDEN:
        if bad in path:
            return "must not contain %r" % bad
    if path.endswith("/..") or path.endswith("/.") or any(c.isspace() or c == "?" for c in path):
        return "must be a plain path (no '?', whitespace, or trailing '/.' or '/..')"
    return None


def _strip_slash(path):
    """'/httpbin/' and '/httpbin' are the same prefix for PathPrefix; keep one spelling."""
    return path.rstrip("/") or "/"


def _normalize(app, index, errors):
    """The app with defaults applied, or None (and an error) when it cannot be rendered."""
    where = "expose_app_apps[%d]" % index
    if not isinstance(app, dict):
        errors.append("%s is not a dict: give name, namespace, port and hostnames" % where)
        return None
    unknown = sorted(set(app) - set(APP_KEYS))
    name = app.get("name")
    if not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 63:
        errors.append("%s: name %r is not a DNS-1123 label (lower-case letters, digits and '-', at most 63): "
                      "rename the app" % (where, name))
        return None
    where = "app %s" % name
    if unknown:
        errors.append("%s: unknown key(s) %s: use only %s" % (where, ", ".join(unknown), ", ".join(APP_KEYS)))
    out = {
        "name": name,
        "namespace": app.get("namespace"),
        "service": app.get("service") or name,
        "port": app.get("port"),
        "hostnames": app.get("hostnames"),
        "path_prefix": app.get("path_prefix") or "/",
        "rewrite": app.get("rewrite") if app.get("rewrite") is not None else "/",
        "section_name": app.get("section_name"),
    }
    ok = True
    if not isinstance(out["namespace"], str) or not DNS_LABEL.match(out["namespace"]):
        errors.append("%s: namespace %r is not a DNS-1123 label: set namespace to the namespace of its Service"
                      % (where, out["namespace"]))
        ok = False
    if not isinstance(out["service"], str) or not DNS_LABEL.match(out["service"]):
        errors.append("%s: service %r is not a valid Service name: set service to the backend Service's name"
                      % (where, out["service"]))
        ok = False
    port = out["port"]
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        errors.append("%s: port %r is not a port number (1-65535): set port to the Service port to route to"
                      % (where, out["port"]))
        ok = False
    out["port"] = port
    hosts = out["hostnames"]
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(hosts, list) or not hosts:
        errors.append("%s: hostnames is empty: give at least one hostname (e.g. www.example.com)" % where)
        ok = False
        hosts = []
    if len(hosts) > 16:
        errors.append("%s: %d hostnames, an HTTPRoute takes at most 16: split the app" % (where, len(hosts)))
        ok = False
    for host in hosts:
        problem = _hostname_error(host)
        if problem:
            errors.append("%s: hostname %r %s: fix it in hostnames" % (where, host, problem))
            ok = False
    if len(set(hosts)) != len(hosts):
        errors.append("%s: hostnames lists a name twice: remove the duplicate" % where)
        ok = False
    out["hostnames"] = list(hosts)
    for key in ("path_prefix", "rewrite"):
        problem = _path_error(out[key])
        if problem:
            errors.append("%s: %s %r %s: fix %s" % (where, key, out[key], problem, key))
            ok = False
    if ok:
        out["path_prefix"] = _strip_slash(out["path_prefix"])
    return out if ok else None


def _listener_errors(apps, settings):
    errors = []
    if not settings["gateway"].get("create", True):
        # The listeners are those of the platform team's Gateway: the plan checks them against it.
        return errors
    listeners = settings["gateway"]["listeners"]
    names = [lst.get("name") for lst in listeners]
    if not listeners:
        errors.append("expose_app_gateway_listeners is empty: give at least one listener "
                      "(e.g. {name: http, port: 80, protocol: HTTP})")
    if len(set(names)) != len(names):
        errors.append("expose_app_gateway_listeners has two listeners named alike: give each a unique name")
    for listener in listeners:
        if not listener.get("name") or not listener.get("port") or not listener.get("protocol"):
            errors.append("expose_app_gateway_listeners entry %r needs name, port and protocol" % (listener,))
    for app in apps:
        if app["section_name"] and app["section_name"] not in names:
            errors.append("app %s: section_name %r is not a listener of Gateway %s/%s (listeners: %s): "
                          "use one of them or add the listener to expose_app_gateway_listeners"
                          % (app["name"], app["section_name"], settings["gateway"]["namespace"],
                             settings["gateway"]["name"], ", ".join(str(n) for n in names)))
    return errors


def _claim_errors(apps):
    """Two apps claiming the same host and prefix would make the edge pick one at random."""
    errors = []
    claims = {}
    names = {}
    for app in apps:
        if app["name"] in names:
            errors.append("apps %s in %s and %s in %s have the same name: app names must be unique"
                          % (app["name"], names[app["name"]], app["name"], app["namespace"]))
        names[app["name"]] = app["namespace"]
        for host in app["hostnames"]:
            key = (host, app["path_prefix"])
            if key in claims and claims[key] != app["name"]:
                errors.append("apps %s and %s both claim host %s with path_prefix %s: give one of them another "
                              "hostname or path_prefix" % (claims[key], app["name"], host, app["path_prefix"]))
            claims.setdefault(key, app["name"])
    return errors


def input_check(apps, settings):
    """(normalized apps, errors) from the declarations alone, without anything read from the cluster."""
    errors = []
    if apps is None:
        apps = []
    if not isinstance(apps, list):
        return [], ["expose_app_apps must be a list of apps"]
    normalized = [a for a in (_normalize(app, i, errors) for i, app in enumerate(apps)) if a]
    errors.extend(_claim_errors(normalized))
    errors.extend(_listener_errors(normalized, settings))
    sample = settings.get("sample") or {}
    if sample.get("enabled") and not DNS_LABEL.match(str(sample.get("namespace"))):
        errors.append("expose_app_sample_namespace %r is not a DNS-1123 label" % (sample.get("namespace"),))
    return normalized, errors


def input_errors(apps, settings):
    """What is wrong with the declarations themselves (hostnames, prefixes, duplicate claims, listeners),
    decidable before anything is read from the cluster; site.yml checks it before any role writes."""
    return input_check(apps, settings)[1]
