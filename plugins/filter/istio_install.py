# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic for the istio_install role: input checks the argument specs cannot express, the names
Istio's charts give istiod and its sidecar injector, which istiod and which gateways a cluster runs,
where a chart lies in a local directory, the chart values, and helm failures turned into one line.

Nothing here runs helm or talks to the API server: the role feeds in what kubernetes.core and helm
read, so each decision is unit-tested in tests/unit/test_istio_install.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import copy
import json
import posixpath
import re

import yaml

from ansible_collections.teg.istio.plugins.module_utils.names import image_version

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Istio's chart versions are plain SemVer (1.29.6, 1.30.0-beta.0).
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")
_REPO_SCHEMES = ("https://", "http://", "oci://")
# The namespace whose injector webhook carries no namespace suffix (Istio's istiod chart).
_DEFAULT_NAMESPACE = "istio-system"


def istio_install_input_errors(namespace, revision, version, chart_path, chart_repo_url):
    """One-line messages for inputs the API server or helm would refuse later (empty when all is well)."""
    errors = []
    if not _DNS_LABEL.match(namespace or "") or len(namespace) > 63:
        errors.append("istio_install_namespace %r is not a namespace name (lower-case letters, digits and '-', "
                      "at most 63 characters)" % (namespace,))
    if revision:
        if revision == "default":
            errors.append("istio_install_revision 'default' is the name Istio gives the unrevisioned control plane: "
                          "leave istio_install_revision empty for it")
        elif not _DNS_LABEL.match(revision) or len("istiod-" + revision) > 63:
            errors.append("istio_install_revision %r is not a valid revision (lower-case letters, digits and '-', "
                          "at most 56 characters, since istiod-<revision> names a Deployment)" % (revision,))
    if not _VERSION.match(version or ""):
        errors.append("istio_install_version %r is not an Istio chart version such as 1.29.6" % (version,))
    if chart_path:
        if not chart_path.startswith("/"):
            errors.append("istio_install_chart_path %r must be an absolute path" % (chart_path,))
    elif not (chart_repo_url or "").startswith(_REPO_SCHEMES):
        errors.append("istio_install_chart_repo_url %r must start with https://, http:// or oci:// "
                      "(or set istio_install_chart_path to a local chart directory)" % (chart_repo_url,))
    return errors


def istio_install_istiod_name(revision):
    """Name of the istiod Deployment, Service and Helm release for a revision (Istio's convention)."""
    return "istiod-%s" % revision if revision else "istiod"


def istio_install_injector_name(namespace, revision):
    """Name of the sidecar-injector MutatingWebhookConfiguration that Istio's istiod chart creates:
    istio-sidecar-injector, suffixed by the revision, and by the namespace outside istio-system."""
    name = "istio-sidecar-injector"
    if revision:
        name += "-" + revision
    if namespace != _DEFAULT_NAMESPACE:
        name += "-" + namespace
    return name


def _labels(obj):
    return (obj.get("metadata") or {}).get("labels") or {}


def _available(deployment):
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Available":
            return condition.get("status") == "True"
    return False


def _istiod_summary(deployment):
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    # istiod's container is "discovery" in every chart version; the first one is the fallback.
    container = next((c for c in containers if c.get("name") == "discovery"), containers[0] if containers else {})
    meta = deployment.get("metadata") or {}
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "revision": _labels(deployment).get("istio.io/rev") or "default",
        "version": image_version(container.get("image")),
        "available": _available(deployment),
        "helm_release": (meta.get("annotations") or {}).get("meta.helm.sh/release-name"),
    }


def _is_gateway(deployment):
    labels = _labels(deployment)
    istio = labels.get("istio") or ""
    # istiod is istio=pilot; egress gateways are not an ingress path, so they are no concern here.
    return labels.get("app") != "istiod" and istio not in ("", "pilot") and "egress" not in istio


def istio_install_inventory(deployments, namespace, revision):
    """From the Deployments labelled `istio` in all namespaces: `istiod`, the istiod of this namespace
    and revision (or None); `other_istiods`, every other one; `gateways`, Istio gateway Deployments
    (an ingress gateway the procedure does not need, since TEG is the edge)."""
    name = istio_install_istiod_name(revision)
    istiod, others, gateways = None, [], []
    for deployment in sorted(deployments or [], key=lambda d: ((d.get("metadata") or {}).get("namespace") or "",
                                                               (d.get("metadata") or {}).get("name") or "")):
        meta = deployment.get("metadata") or {}
        if _labels(deployment).get("app") == "istiod":
            summary = _istiod_summary(deployment)
            if meta.get("namespace") == namespace and meta.get("name") == name:
                istiod = summary
            else:
                others.append(summary)
        elif _is_gateway(deployment):
            gateways.append({"namespace": meta.get("namespace"), "name": meta.get("name"),
                             "istio": _labels(deployment).get("istio")})
    return {"istiod": istiod, "other_istiods": others, "gateways": gateways}


def istio_install_local_charts(found, directory, version, charts=("base", "istiod")):
    """Where each chart of `version` lies in a local `directory`, from ansible.builtin.find's `files`:
    the archive <chart>-<version>.tgz (what `helm pull` writes) first, else an unpacked <chart>/ folder
    (its Chart.yaml version is checked later). Returns {"refs": {chart: path or None}, "listing": [...]}
    where listing names the chart-like entries seen, for the error message."""
    directory = directory.rstrip("/") or "/"
    entries = {}
    for item in found or []:
        path = item.get("path") or ""
        if posixpath.dirname(path.rstrip("/")) != directory:
            continue
        entries[posixpath.basename(path.rstrip("/"))] = bool(item.get("isdir"))
    refs = {}
    for chart in charts:
        archive = "%s-%s.tgz" % (chart, version)
        if archive in entries and not entries[archive]:
            refs[chart] = posixpath.join(directory, archive)
        elif entries.get(chart):
            refs[chart] = posixpath.join(directory, chart)
        else:
            refs[chart] = None
    listing = sorted(n + ("/" if d else "") for n, d in entries.items() if d or n.endswith((".tgz", ".tar.gz")))
    return {"refs": refs, "listing": listing}


def istio_install_chart_source(chart_path, chart_repo_url):
    """How the role names its chart source in messages."""
    if chart_path:
        return "local chart directory %s" % chart_path
    return "chart repository %s" % chart_repo_url


def istio_install_failed_results(results):
    """The items of a looped command or helm task (run with failed_when: false) that did not succeed."""
    return [r for r in results or [] if not r.get("skipped") and r.get("rc", 1) != 0]


def istio_install_chart_errors(shown, version, source):
    """Messages for charts that `helm show chart` could not read, or whose Chart.yaml is not the wanted
    chart at the wanted version. `shown` are the results of the looped command; each item is
    {"key": chart name, "value": chart reference}."""
    errors = []
    for result in shown or []:
        chart, ref = result["item"]["key"], result["item"]["value"]
        if result.get("rc", 1) != 0:
            errors.append("%s in the %s is not a readable Helm chart (%s): replace it"
                          % (ref, source, istio_install_helm_error(result)))
            continue
        try:
            meta = yaml.safe_load(result.get("stdout") or "") or {}
        except yaml.YAMLError:
            meta = {}
        if meta.get("name") != chart:
            errors.append("%s in the %s is chart %r, not %r: put Istio's %s chart there"
                          % (ref, source, meta.get("name"), chart, chart))
        elif str(meta.get("version")) != version:
            errors.append("chart %s in the %s (%s) is version %s, not %s: put %s-%s.tgz there "
                          "(helm pull istio/%s --version %s) or set istio_install_version to %s"
                          % (chart, source, ref, meta.get("version"), version, chart, version, chart, version,
                             meta.get("version")))
    return errors


def _deep_merge(base, override):
    out = copy.deepcopy(base or {})
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def istio_install_base_values(passthrough, namespace):
    """Values for the base chart: the passthrough dict, with the namespace where istiod lives."""
    return _deep_merge(passthrough, {"global": {"istioNamespace": namespace}})


def istio_install_istiod_values(passthrough, namespace, revision, outbound_mode):
    """Values for the istiod chart: the passthrough dict under the role's own settings (which win)."""
    managed = {
        "global": {"istioNamespace": namespace},
        "meshConfig": {"outboundTrafficPolicy": {"mode": outbound_mode}},
    }
    if revision:
        managed["revision"] = revision
    return _deep_merge(passthrough, managed)


def istio_install_release_errors(releases, namespace):
    """Messages for Helm releases stuck in a pending state (an interrupted helm run), which helm
    refuses to upgrade. `releases` is cluster_facts' helm_releases: {name: status dict or None}."""
    errors = []
    for name, release in sorted((releases or {}).items()):
        status = (release or {}).get("status") or ""
        if status.startswith("pending"):
            errors.append("Helm release %s in %s is %s (an interrupted helm run): run `helm rollback %s -n %s` "
                          "(or `helm uninstall %s -n %s` if it never deployed), then run again"
                          % (name, namespace, status, name, namespace, name, namespace))
        elif status in ("uninstalling",):
            errors.append("Helm release %s in %s is being uninstalled: wait for `helm status %s -n %s` to finish, "
                          "then run again" % (name, namespace, name, namespace))
    return errors


def istio_install_release_current(release, chart, version, values):
    """True when `release` (a status from cluster_facts' helm_releases, or None) is a deployed release of
    `chart` at `version` with exactly `values` as user-supplied values: what kubernetes.core.helm
    compares before it decides not to upgrade, so the role can skip running helm at all."""
    release = release or {}
    return (release.get("status") == "deployed" and release.get("chart") == "%s-%s" % (chart, version)
            and (release.get("values") or {}) == (values or {}))


def istio_install_helm_error(result):
    """The one line that says why a helm command (run by kubernetes.core) failed: helm's last
    "Error: ..." line, else the first line of the module's message."""
    result = result or {}
    text = "\n".join(str(result.get(key) or "") for key in ("stderr", "msg"))
    errors = [line.strip()[len("Error:"):].strip() for line in text.splitlines() if line.strip().startswith("Error:")]
    if errors:
        line = errors[-1]
    else:
        line = next((ln.strip() for ln in str(result.get("msg") or "").splitlines() if ln.strip()), "unknown error")
    return re.sub(r"\s+", " ", line)


def istio_install_k8s_error(result):
    """{"code": HTTP status or None, "message": the API server's message} from a failed kubernetes.core
    task, whose msg embeds the response body as a bytes literal ("Failed to create object: b'{...}'")."""
    msg = str((result or {}).get("msg") or "")
    start, end = msg.find("b'"), msg.rfind("'")
    if start != -1 and end > start + 1:
        try:
            body = json.loads(ast.literal_eval(msg[start:end + 1]).decode("utf-8", "replace"))
            return {"code": body.get("code"), "message": re.sub(r"\s+", " ", body.get("message") or "").strip()}
        except (ValueError, SyntaxError, AttributeError):
            pass
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), "unknown error")
    return {"code": (result or {}).get("status"), "message": first}


def istio_install_helm_hint(line):
    """The fix to suggest for a helm failure line, by what helm said."""
    text = (line or "").lower()
    if "invalid ownership metadata" in text or "exists and cannot be imported" in text:
        return ("an object of that name already exists outside this Helm release (another Istio install?): "
                "remove it, or set istio_install_manage: false to use the Istio that is there")
    if "forbidden" in text:
        return "grant the identity running the playbook the rights the chart needs (see docs/rbac.md)"
    if "kubeversion" in text:
        return "pick an istio_install_version that supports this Kubernetes version"
    if "another operation" in text:
        return "wait for the other helm operation to finish, or roll it back, then run again"
    return "see `helm status` and `helm history` of the release"


def istio_install_crd_deletions(crds):
    """Deletion stubs for the CRDs of Istio's API groups (*.istio.io), the set Istio's uninstall guide
    removes, from a list of CustomResourceDefinitions."""
    names = sorted((c.get("metadata") or {}).get("name") or "" for c in crds or [])
    return [{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": n}}
            for n in names if n.endswith(".istio.io")]


class FilterModule(object):
    def filters(self):
        return {
            "istio_install_input_errors": istio_install_input_errors,
            "istio_install_istiod_name": istio_install_istiod_name,
            "istio_install_injector_name": istio_install_injector_name,
            "istio_install_inventory": istio_install_inventory,
            "istio_install_local_charts": istio_install_local_charts,
            "istio_install_chart_source": istio_install_chart_source,
            "istio_install_chart_errors": istio_install_chart_errors,
            "istio_install_crd_deletions": istio_install_crd_deletions,
            "istio_install_failed_results": istio_install_failed_results,
            "istio_install_base_values": istio_install_base_values,
            "istio_install_istiod_values": istio_install_istiod_values,
            "istio_install_release_errors": istio_install_release_errors,
            "istio_install_release_current": istio_install_release_current,
            "istio_install_helm_error": istio_install_helm_error,
            "istio_install_helm_hint": istio_install_helm_hint,
            "istio_install_k8s_error": istio_install_k8s_error,
        }
