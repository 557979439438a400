# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the pure decisions of the istio_install role: input checks the argument specs
cannot express, the names Istio's charts give istiod and its sidecar injector, which istiod and which
gateways a cluster runs, where a chart lies in a local directory, the chart values, which releases are
already what is wanted. Unit-tested in tests/unit/plugins/module_utils/test_istio_install.py. It can
change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import posixpath
import re

from ansible_collections.teg.istio.plugins.module_utils.enrolment import revision_injectors
from ansible_collections.teg.istio.plugins.module_utils.names import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    image_version,
    minor_version,
    version_older,
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# Istio's chart versions are plain SemVer (1.29.6, 1.30.0-beta.0).
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")


_REPO_SCHEMES = ("https://", "http://", "oci://")


# The namespace whose injector webhook carries no namespace suffix (Istio's istiod chart).
_DEFAULT_NAMESPACE = "istio-system"


def input_errors(namespace, revision, version, chart_path, chart_repo_url):
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


def istiod_name(revision):
    """Name of the istiod Deployment, Service and Helm release for a revision (Istio's convention)."""
    return "istiod-%s" % revision if revision else "istiod"


def injector_name(namespace, revision):
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
    annotations = meta.get("annotations") or {}
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "revision": _labels(deployment).get("istio.io/rev") or "default",
        "version": image_version(container.get("image")),
        "available": _available(deployment),
        "helm_release": annotations.get("meta.helm.sh/release-name"),
        "helm_namespace": annotations.get("meta.helm.sh/release-namespace") or meta.get("namespace"),
        "installer": _installer(deployment),
    }


def _installer(deployment):
    """How an istiod Deployment was installed, as its metadata tells: "helm" (Helm's release annotations),
    "istioctl" (istioctl and the IstioOperator label what they install operator.istio.io/component and
    install.operator.istio.io/owning-resource), else "unknown"."""
    if ((deployment.get("metadata") or {}).get("annotations") or {}).get("meta.helm.sh/release-name"):
        return "helm"
    labels = _labels(deployment)
    if labels.get("operator.istio.io/component") or labels.get("install.operator.istio.io/owning-resource"):
        return "istioctl"
    return "unknown"


def _is_gateway(deployment):
    labels = _labels(deployment)
    istio = labels.get("istio") or ""
    # istiod is istio=pilot; egress gateways are not an ingress path, so they are no concern here.
    return labels.get("app") != "istiod" and istio not in ("", "pilot") and "egress" not in istio


def inventory(deployments, namespace, revision):
    """From the Deployments labelled `istio` in all namespaces: `istiod`, the istiod of this namespace
    and revision (or None); `other_istiods`, every other one; `gateways`, Istio gateway Deployments
    (an ingress gateway the procedure does not need, since TEG is the edge)."""
    name = istiod_name(revision)
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


def local_charts(found, directory, version, charts=("base", "istiod")):
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


def chart_source(chart_path, chart_repo_url):
    """How the role names its chart source in messages."""
    if chart_path:
        return "local chart directory %s" % chart_path
    return "chart repository %s" % chart_repo_url


def _deep_merge(base, override):
    out = copy.deepcopy(base or {})
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_values(passthrough, namespace):
    """Values for the base chart: the passthrough dict, with the namespace where istiod lives."""
    return _deep_merge(passthrough, {"global": {"istioNamespace": namespace}})


def istiod_values(passthrough, namespace, revision, outbound_mode, mesh_mode="sidecar"):
    """Values for the istiod chart: the passthrough dict under the role's own settings (which win). In ambient mode
    the chart's own `profile: ambient` (its files/profile-ambient.yaml: PILOT_ENABLE_AMBIENT, HBONE, the CNI's
    ambient switch)."""
    managed = {
        "global": {"istioNamespace": namespace},
        "meshConfig": {"outboundTrafficPolicy": {"mode": outbound_mode}},
    }
    if mesh_mode == "ambient":
        managed["profile"] = "ambient"
    if revision:
        managed["revision"] = revision
    return _deep_merge(passthrough, managed)


def istiod_image_version(values, chart_version):
    """The version istiod's image tag reads as (names.image_version) once the istiod chart is applied with
    `values`: the chart's image reference is `image` as is when it names a registry path, else
    <hub>/pilot:<tag or global.tag>[-<variant>], and the published charts set global.tag to their own version
    (manifests/charts/istio-control/istio-discovery/templates/deployment.yaml). So a custom tag predicts the
    istiod the run will really make, and teg_restart plans no restart that the run then does not make."""
    values = values or {}
    globals_ = values.get("global") or {}
    image = values.get("image") or ""
    if "/" in image:
        return image_version(image)
    tag = values.get("tag") or globals_.get("tag") or chart_version
    variant = values.get("variant") or globals_.get("variant")
    return image_version("pilot:%s%s" % (tag, "-" + variant if variant else ""))


# --- an Istio this collection did not install ---------------------------------------------------------------

def release_ours(release):
    """True when a Helm release (cluster_facts' helm_releases status) was installed by this collection: it installs
    its releases with `--labels app.kubernetes.io/managed-by=teg.istio` (Helm >= 3.13), a label Helm keeps on the
    release record and merges into every later upgrade, whoever runs it (docs/existing-mesh.md)."""
    return ((release or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def istiod_ours(istiod, releases):
    """True when an istiod (inventory's summary) belongs to a Helm release this collection installed. `releases`:
    {(namespace, release name): status or None} of the istiods' releases."""
    return istiod["installer"] == "helm" and release_ours(releases.get((istiod["helm_namespace"], istiod["helm_release"])))


def _installed_by(istiod):
    if istiod["installer"] == "helm":
        return "Helm release %s in %s" % (istiod["helm_release"], istiod["helm_namespace"])
    if istiod["installer"] == "istioctl":
        return "istioctl or the Istio operator"
    return "not Helm, istioctl or the operator"


def injection_labels(revision, injectors):
    """The namespace label that gets a revision's sidecars: `istio-injection=enabled` when the revision is the
    default one or the revision tag `default` points at it (what that label resolves to), else
    `istio.io/rev=<revision>`."""
    if revision == "default" or "default" in ((injectors or {}).get(revision) or {}).get("tags", []):
        return {"istio-injection": "enabled"}
    return {"istio.io/rev": revision}


def existing_istiod(found, releases, namespace, istiod_release, webhooks):
    """The istiod to use as it is, else None (the role installs or manages its own). None when no istiod runs or one
    of them is this collection's (a release it installed is kept up to date); otherwise the istiod of the
    role's namespace and revision, else the one the revision tag `default` points at, else the default revision,
    else the first by namespace and name. `found`: inventory(); `releases`: as istiod_ours takes them; `webhooks`:
    every MutatingWebhookConfiguration. Returns the summary with `ours`, `injector`, `tags` and
    `injection_labels` added."""
    istiods = ([found["istiod"]] if found["istiod"] else []) + list(found["other_istiods"])
    if not istiods or any(istiod_ours(i, releases) for i in istiods):
        return None
    injectors = revision_injectors(webhooks)
    default_tag = next((rev for rev, entry in injectors.items() if "default" in entry["tags"]), None)
    chosen = sorted(istiods, key=lambda i: (not (i["namespace"] == namespace and i["name"] == istiod_release),
                                            i["revision"] != default_tag, i["revision"] != "default",
                                            i["namespace"], i["name"]))[0]
    entry = injectors.get(chosen["revision"]) or {}
    return dict(chosen, ours=False, injector=entry.get("injector"), tags=sorted(entry.get("tags") or []),
                injection_labels=injection_labels(chosen["revision"], injectors))


def existing_errors(istiod):
    """Why an istiod found running cannot be used as it is (not available, no sidecar injector), else []."""
    where = "%s/%s (Istio %s, revision %s, installed by %s)" % (istiod["namespace"], istiod["name"],
                                                                istiod["version"] or "?", istiod["revision"],
                                                                _installed_by(istiod))
    if not istiod["available"]:
        return ["Deployment %s is not Available, and this role uses an Istio it did not install as it is: repair it "
                "(`kubectl -n %s describe deployment %s`), then run again" % (where, istiod["namespace"], istiod["name"])]
    if not istiod["injector"]:
        return ["Deployment %s runs but no sidecar injector (MutatingWebhookConfiguration labelled istio.io/rev=%s) is "
                "registered for it, so no pod would get a sidecar: repair that Istio install, then run again"
                % (where, istiod["revision"])]
    return []


def existing_report(istiod, reason):
    """The one line that says which Istio is used and that nothing was installed or upgraded."""
    tags = (", revision tag(s) %s" % ", ".join(istiod["tags"])) if istiod["tags"] else ""
    labels = ", ".join("%s=%s" % item for item in sorted(istiod["injection_labels"].items()))
    return ("Istio %s: Deployment %s/%s (revision %s%s, installed by %s) available, sidecar injector %s registered "
            "(namespaces join it with %s); used as it is, nothing installed or upgraded: %s"
            % (istiod["version"] or "(untagged image)", istiod["namespace"], istiod["name"], istiod["revision"], tags,
               _installed_by(istiod), istiod["injector"], labels, reason))


def upgrade_existing_error(istiod, namespace, istiod_release):
    """The refusal of istio_install_existing: upgrade on an istiod the role cannot upgrade as a Helm release of its
    own names (installed another way, or as a release of another name or namespace), else None."""
    if istiod["installer"] != "helm":
        return ("istio_install_existing is upgrade, but Deployment %s/%s (Istio %s) was installed by %s, not by a Helm "
                "release: upgrade it the way it was installed, or set istio_install_existing: use to use it as it is"
                % (istiod["namespace"], istiod["name"], istiod["version"] or "?", _installed_by(istiod)))
    if (istiod["helm_namespace"], istiod["helm_release"]) != (namespace, istiod_release):
        revision = "" if istiod["revision"] == "default" else istiod["revision"]
        return ("istio_install_existing is upgrade, but the istiod that runs is Helm release %s in %s, not %s in %s: "
                "set istio_install_namespace: %s and istio_install_revision: %r to upgrade it, or istio_install_existing: "
                "use to use it as it is" % (istiod["helm_release"], istiod["helm_namespace"], istiod_release, namespace,
                                            istiod["helm_namespace"], revision))
    return None


def kept_values(owners, role):
    """The values of an upgrade of a release this collection did not install: the release's user-supplied values
    (its record's `config`, what `helm get values` prints) with the role's own settings merged over them, which is
    what `helm upgrade --reset-then-reuse-values` with the role's values does (Helm >= 3.14), read and merged here so
    that check mode and --diff show it and any Helm 3 applies it."""
    return _deep_merge(owners, role)


# Helm stores release labels (--labels) from 3.13 on.
HELM_LABELS_MINIMUM = (3, 13)


def helm_version_error(short_version, where):
    """The refusal of a helm too old to label the releases it installs (`helm version --short`: "v3.19.5+g..."),
    else None. An unreadable version is let through: helm itself then names a flag it does not know."""
    match = re.match(r"^v?([0-9]+)\.([0-9]+)", (short_version or "").strip())
    if match is None or (int(match.group(1)), int(match.group(2))) >= HELM_LABELS_MINIMUM:
        return None
    return ("%s is Helm %s, older than 3.13, which this role needs to label the releases it installs (helm --labels, so "
            "that it never takes over a release it did not install): install Helm 3.13 or later, or Helm 4, or set "
            "istio_install_helm_binary to one" % (where, short_version.strip()))


def release_errors(releases, namespace):
    """Messages for Helm releases stuck in a pending state (an interrupted helm run), which helm
    refuses to upgrade. `releases` is cluster_facts' helm_releases: {name: status dict or None}."""
    errors = []
    for name, release in sorted((releases or {}).items()):
        status = (release or {}).get("status") or ""
        if status == "pending-install":
            # Never deployed: there is no revision to roll back to (helm rollback refuses), only the record to remove.
            errors.append("Helm release %s in %s is pending-install (an interrupted helm install): run `helm uninstall "
                          "%s -n %s`, then run again" % (name, namespace, name, namespace))
        elif status.startswith("pending"):
            errors.append("Helm release %s in %s is %s (an interrupted helm run): run `helm rollback %s -n %s` "
                          "(or `helm uninstall %s -n %s` if it never deployed), then run again"
                          % (name, namespace, status, name, namespace, name, namespace))
        elif status in ("uninstalling",):
            errors.append("Helm release %s in %s is being uninstalled: wait for `helm status %s -n %s` to finish, "
                          "then run again" % (name, namespace, name, namespace))
    return errors


def release_current(release, chart, version, values):
    """True when `release` (a status from cluster_facts' helm_releases, or None) is a deployed release of
    `chart` at `version` with exactly `values` as user-supplied values: what kubernetes.core.helm
    compares before it decides not to upgrade, so the role can skip running helm at all."""
    release = release or {}
    return (release.get("status") == "deployed" and release.get("chart") == "%s-%s" % (chart, version)
            and (release.get("values") or {}) == (values or {}))


def _release_version(release, chart):
    """The chart version of a Helm release of `chart` ("istiod-1.29.6" -> "1.29.6"), None when unknown."""
    name = (release or {}).get("chart") or ""
    version = name[len(chart) + 1:] if name.startswith(chart + "-") else ""
    return version if _VERSION.match(version) else None


def upgrade_errors(releases, names, version, namespace):
    """The refusal of an in-place move the Helm releases cannot make as Istio documents it, else []:
    Istio's in-place upgrade needs the installed version to be at most one minor version older than the
    new one (istio.io/latest/docs/setup/upgrade/in-place, "Upgrade prerequisites"), so a move of more than
    one minor version, up or down, or to another major version, is refused. `releases`: cluster_facts'
    helm_releases; `names`: chart -> release name, istiod first (its version is what the sidecars run)."""
    for chart, release in names:
        installed = _release_version(releases.get(release), chart)
        if installed is None or installed == version:
            continue
        (old_major, old_minor), (new_major, new_minor) = minor_version(installed), minor_version(version)
        if old_major == new_major and abs(new_minor - old_minor) <= 1:
            continue
        step = "%d.%d" % (old_major, old_minor + (1 if version_older(installed, version) else -1))
        return ["Helm release %s in %s is Istio %s, and istio_install_version %s would %s it in place by more than one "
                "minor version, which Istio does not support (an in-place upgrade moves one minor version at a "
                "time): set istio_install_version to a %s release and run, then %s"
                % (release, namespace, installed, version, "upgrade" if version_older(installed, version) else "downgrade",
                   step, version)]
    return []


def downgrade_warning(releases, names, version, namespace):
    """A warning when the releases move to an older version (within one minor version, which Istio's in-place
    procedure allows), else None."""
    for chart, release in names:
        installed = _release_version(releases.get(release), chart)
        if installed is not None and version_older(version, installed):
            return ("Helm release %s in %s is downgraded in place from Istio %s to %s; the sidecars follow when TEG "
                    "restarts" % (release, namespace, installed, version))
    return None


def crd_deletions(crds):
    """Deletion stubs for the CRDs of Istio's API groups (*.istio.io), the set Istio's uninstall guide
    removes, from a list of CustomResourceDefinitions."""
    names = sorted((c.get("metadata") or {}).get("name") or "" for c in crds or [])
    return [{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": n}}
            for n in names if n.endswith(".istio.io")]


def chart_errors(checked, version, source):
    """Messages for the charts found but not usable: `checked` maps chart -> (reference, its Chart.yaml as a
    dict, or the reason it could not be read as a string)."""
    errors = []
    for chart in ("base", "istiod", "cni", "ztunnel"):
        if chart not in checked:
            continue
        ref, meta = checked[chart]
        if not isinstance(meta, dict):
            errors.append("%s in the %s is not a readable Helm chart (%s): replace it" % (ref, source, meta))
        elif meta.get("name") != chart:
            errors.append("%s in the %s is chart %r, not %r: put Istio's %s chart there"
                          % (ref, source, meta.get("name"), chart, chart))
        elif str(meta.get("version")) != version:
            errors.append("chart %s in the %s (%s) is version %s, not %s: put %s-%s.tgz there "
                          "(helm pull istio/%s --version %s) or set istio_install_version to %s"
                          % (chart, source, ref, meta.get("version"), version, chart, version, chart, version,
                             meta.get("version")))
    return errors


# Istio 1.22 promoted networking.istio.io and security.istio.io to v1 (docs/architecture.md).
_V1_FROM = (1, 22)


def predicted_apis(version):
    """The VirtualService and PeerAuthentication API versions the Istio `version` (1.29.6) serves."""
    parts = str(version).lstrip("v").split(".")
    served = "v1" if (int(parts[0]), int(parts[1])) >= _V1_FROM else "v1beta1"
    return {"virtualservice_api_version": "networking.istio.io/" + served,
            "peerauthentication_api_version": "security.istio.io/" + served}


# --- ambient mode -------------------------------------------------------------------------------------------

# The releases ambient mode adds beside istio-base and istiod, by chart (Istio's Helm install page for ambient,
# istio.io/latest/docs/ambient/install/helm/: base, istiod with profile ambient, cni, ztunnel, in that order).
AMBIENT_RELEASES = {"cni": "istio-cni", "ztunnel": "ztunnel"}

# The DaemonSets those charts run (the cni chart's `istio-cni-node`, the ztunnel chart's `ztunnel`).
AMBIENT_DAEMONSETS = {"cni": "istio-cni-node", "ztunnel": "ztunnel"}

# Ambient mode went GA in Istio 1.24; the charts of older releases either lack it or carry it as alpha/beta.
AMBIENT_MINIMUM = (1, 24)

# The oldest Kubernetes minor version each Istio minor release supports (Istio's "Supported Releases" page,
# istio.io/latest/docs/releases/supported-releases/#support-status-of-istio-releases, rendered from
# istio/istio.io data/compatibility/supportStatus.yml, `k8sVersions`: rows 1.26 to 1.30 checked against that
# file, 1.24 and 1.25 not checked here; row 1.31 as that file has it since istio/istio.io#17638 of 2026-09-30,
# which added 1.37 to it, read from a quotation of it: no copy of the file at a version that has 1.31 could be read
# here); a release newer than the table takes its newest row. Older Kubernetes
# is refused in ambient mode (ztunnel and the CNI agent rely on the node and pod APIs of the supported
# versions); newer than the tested range is only warned about.
KUBERNETES_SUPPORT = {
    (1, 24): ((1, 28), (1, 31)),
    (1, 25): ((1, 29), (1, 32)),
    (1, 26): ((1, 29), (1, 33)),
    (1, 27): ((1, 29), (1, 33)),
    (1, 28): ((1, 30), (1, 34)),
    (1, 29): ((1, 31), (1, 35)),
    (1, 30): ((1, 32), (1, 36)),
    (1, 31): ((1, 32), (1, 37)),
}


# Istio supports a minor release until six weeks after the N+2 minor release (istio.io/latest/docs/releases/
# supported-releases/#support-policy). The release dates of minors known here: 1.21.0 2024-03-13 and 1.22.0
# 2024-05-13 (istio/istio.io data/compatibility/supportStatus.yml, which gives 1.19 and 1.20 their end of life from
# them, 2024-04-24 and 2024-06-25), 1.30.0 2026-05-18 (istio.io/latest/news/releases/1.30.x), 1.31.0 2026-08-31
# (github.com/istio/istio/releases). Support ends in release order, so a minor older than one whose end is known
# has ended by then at the latest.
ISTIO_MINOR_RELEASED = {
    (1, 21): datetime.date(2024, 3, 13),
    (1, 22): datetime.date(2024, 5, 13),
    (1, 30): datetime.date(2026, 5, 18),
    (1, 31): datetime.date(2026, 8, 31),
}
ISTIO_SUPPORT_AFTER_N_PLUS_2 = datetime.timedelta(weeks=6)


def istio_end_of_life(version):
    """(date, exact) by which Istio `version`'s minor left support, from ISTIO_MINOR_RELEASED: exact when its N+2
    release date is known, else the end of the nearest newer minor whose is (an upper bound); None when neither."""
    minor = minor_version(version)
    if minor is None:
        return None
    for released in sorted(ISTIO_MINOR_RELEASED):
        ended = (released[0], released[1] - 2)
        if ended >= minor:
            return ISTIO_MINOR_RELEASED[released] + ISTIO_SUPPORT_AFTER_N_PLUS_2, ended == minor
    return None


def support_window_warning(version, today, what, fix):
    """The warning, else None, when Istio `version` (`what`: which Istio it is) is past its end of life on `today`."""
    end = istio_end_of_life(version)
    if end is None or today <= end[0]:
        return None
    when = end[0].isoformat() if end[1] else "by %s at the latest" % end[0].isoformat()
    return ("%s Istio %s is past its end of life (%s: Istio supports a minor release until six weeks after the "
            "second minor release after it, istio.io/latest/docs/releases/supported-releases): %s"
            % (what, version, when, fix))


def charts_for(mesh_mode):
    """The charts a mode installs, in install order."""
    return ("base", "istiod") + (("cni", "ztunnel") if mesh_mode == "ambient" else ())


def ambient_version_error(mesh_mode, version):
    """The refusal of ambient mode on an Istio older than 1.24, else None (`version` already checked as SemVer)."""
    if mesh_mode != "ambient" or not _VERSION.match(version or ""):
        return None
    if minor_version(version) >= AMBIENT_MINIMUM:
        return None
    return ("istio_install_version %s has no ambient mode that Istio supports (ambient is GA from Istio 1.24): set "
            "istio_install_version to 1.24 or later, or istio_install_mesh_mode (teg_istio_mesh_mode) to sidecar"
            % version)


def kubernetes_support(version, git_version):
    """(error or None, warning or None) for Kubernetes `git_version` ("v1.34.4") under Istio `version` in ambient mode:
    older than the oldest Kubernetes that Istio release supports is refused, newer than the newest it was tested
    with is warned about. An unreadable version is let through (the API server is what it is)."""
    kubernetes = minor_version(git_version)
    if kubernetes is None:
        return None, None
    istio = minor_version(version)
    known = sorted(KUBERNETES_SUPPORT)
    row = KUBERNETES_SUPPORT.get(istio) or KUBERNETES_SUPPORT[known[-1] if istio > known[-1] else known[0]]
    (low, high) = row
    if kubernetes < low:
        return ("Kubernetes %s is older than Istio %s supports (1.%d to 1.%d, istio.io/latest/docs/releases/"
                "supported-releases): upgrade the cluster to Kubernetes 1.%d or later, or set istio_install_version "
                "to an Istio release that supports it" % (git_version, version, low[1], high[1], low[1])), None
    if kubernetes > high:
        return None, ("Kubernetes %s is newer than the versions Istio %s was tested with (1.%d to 1.%d, "
                      "istio.io/latest/docs/releases/supported-releases)" % (git_version, version, low[1], high[1]))
    return None, None


def sidecar_kubernetes_warning(version, git_version):
    """The warning, else None, for Kubernetes `git_version` outside the range Istio `version` supports, in sidecar mode:
    istiod and the sidecars lean on fewer node and pod APIs than ambient's agents, so neither side of the range is
    refused (the owners of an older cluster may have nothing newer), but both are named with the fix."""
    error, warning = kubernetes_support(version, git_version)
    if error:
        return error.replace("): upgrade the cluster", "; sidecar mode is not refused, but unsupported): upgrade the "
                             "cluster", 1)
    return warning


def foreign_daemonsets(daemonsets, namespace):
    """The refusals for DaemonSets named as the cni and ztunnel charts name theirs that are not part of this role's
    releases in `namespace` (another CNI agent or ztunnel: a second one on each node would fight over the pods'
    traffic), one message for all. `daemonsets`: the cluster's DaemonSets, all namespaces."""
    wanted = dict((name, chart) for chart, name in AMBIENT_DAEMONSETS.items())
    found = []
    for daemonset in daemonsets or []:
        meta = daemonset.get("metadata") or {}
        chart = wanted.get(meta.get("name"))
        if chart is None:
            continue
        annotations = meta.get("annotations") or {}
        if annotations.get("meta.helm.sh/release-name") == AMBIENT_RELEASES[chart] and \
                annotations.get("meta.helm.sh/release-namespace") == namespace and meta.get("namespace") == namespace:
            continue
        owner = annotations.get("meta.helm.sh/release-name")
        found.append("%s/%s (%s)" % (meta.get("namespace"), meta.get("name"),
                                     ("Helm release %s in %s" % (owner, annotations.get("meta.helm.sh/release-namespace")))
                                     if owner else "not installed by Helm"))
    if not found:
        return []
    return ["DaemonSet %s already runs and is not part of release %s in %s: remove it (or the Istio ambient install it "
            "belongs to) first, or set istio_install_manage: false to use that Istio as it is"
            % (", ".join(sorted(found)), " / ".join(AMBIENT_RELEASES[c] for c in ("cni", "ztunnel")), namespace)]


def cni_values(passthrough, namespace, revision):
    """Values for the cni chart: the passthrough dict under the role's own settings (which win), ambient enabled
    through the chart's own profile, and the revision. Not the Istio namespace: the real chart does not read
    global.istioNamespace (tests/integration/test_istio_charts.py)."""
    return _ambient_chart_values(passthrough, {"profile": "ambient"}, revision)


def ztunnel_values(passthrough, namespace, revision):
    """Values for the ztunnel chart: the passthrough dict under the role's own settings (which win), the Istio
    namespace (where istiod's CA and xDS are) and the revision."""
    return _ambient_chart_values(passthrough, {"istioNamespace": namespace}, revision)


def _ambient_chart_values(passthrough, managed, revision):
    """`passthrough` with the role's `managed` settings and its revision (when set) merged over it."""
    if revision:
        managed = dict(managed, revision=revision)
    return _deep_merge(passthrough, managed)
