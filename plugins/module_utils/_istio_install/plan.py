# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the plan of the istio_install role (step 2: Istio's control plane with Helm,
charts base then istiod, and in ambient mode cni then ztunnel; never the gateway chart), its verification
after the install, and the uninstall. One read (Istio's Deployments, the injector, Helm's release Secrets); helm runs only to look
at charts in a repository (`helm show chart`, which leaves no file behind) and only when something is
to install. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import shutil
import time

try:
    import yaml
except ImportError:  # reported by AnsibleK8SModule's own dependency check
    yaml = None

from ansible_collections.teg.istio.plugins.module_utils._helm import (
    chart_metadata,
    helm_binary,
    helm_environment,
    helm_error_line,
    run_helm,
    scratch_directory,
)
from ansible_collections.teg.istio.plugins.module_utils._istio_install.decisions import (
    AMBIENT_DAEMONSETS,
    AMBIENT_RELEASES,
    ambient_version_error,
    base_values,
    charts_for,
    cni_values,
    foreign_daemonsets,
    kubernetes_support,
    ztunnel_values,
    chart_errors,
    chart_source,
    crd_deletions,
    downgrade_warning,
    existing_errors,
    existing_istiod,
    existing_report,
    helm_version_error,
    sidecar_kubernetes_warning,
    support_window_warning,
    injector_name,
    input_errors,
    inventory,
    istiod_image_version,
    istiod_name,
    istiod_ours,
    istiod_values,
    kept_values,
    local_charts,
    predicted_apis,
    release_current,
    release_errors,
    release_ours,
    upgrade_errors,
    upgrade_existing_error,
)
from ansible_collections.teg.istio.plugins.module_utils.names import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from ansible_collections.teg.istio.plugins.module_utils.rollout import poll_pauses

BASE_RELEASE = "istio-base"


def _ambient(settings):
    return settings.get("mesh_mode") == "ambient"


def _names(settings):
    return dict(AMBIENT_RELEASES, base=BASE_RELEASE, istiod=istiod_name(settings["revision"]),
                injector=injector_name(settings["namespace"], settings["revision"]))


def _values(settings):
    return {"base": base_values(settings["base_values"], settings["namespace"]),
            "istiod": istiod_values(settings["istiod_values"], settings["namespace"], settings["revision"],
                                    settings["outbound_traffic_policy"], settings.get("mesh_mode")),
            "cni": cni_values(settings["cni_values"], settings["namespace"], settings["revision"]),
            "ztunnel": ztunnel_values(settings["ztunnel_values"], settings["namespace"], settings["revision"])}


def _where(items):
    return ", ".join("%s/%s" % (i["namespace"], i["name"]) for i in items)


def _helm_error(settings, view):
    """The refusal when helm cannot run, else None (`helm version`, as a real run would start it)."""
    binary = helm_binary(settings["helm_binary"])
    scratch = scratch_directory("teg-istio-helm.")
    try:
        rc, out, err = run_helm(binary, ["version", "--short"], helm_environment(view.params, scratch)) if binary \
            else (127, "", "no helm found on PATH")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if rc == 0:
        return helm_version_error(out, ("helm binary %s" % settings["helm_binary"]) if settings["helm_binary"]
                                  else "the helm on the PATH of %s" % settings["host"])
    reason = (err or out).strip().splitlines()[0] if (err or out).strip() else "exit %d" % rc
    where = ("helm binary %s cannot run (%s)" % (settings["helm_binary"], reason)) if settings["helm_binary"] else \
        ("no helm binary on the PATH of %s (%s)" % (settings["host"], reason))
    return (where + ": install Helm 3.13 or later, or Helm 4 (https://helm.sh/docs/intro/install/, or copy a release "
            "archive's binary on an air-gapped host) or set istio_install_helm_binary to its full path")


def _local_chart_errors(settings, source):
    """(chart references, errors) for charts in a local directory."""
    charts = charts_for(settings.get("mesh_mode"))
    directory = settings["chart_path"]
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return None, ["%s does not exist or is not a readable directory: set istio_install_chart_path to the directory "
                      "holding the %s charts" % (directory, ", ".join(charts))]
    found = [{"path": os.path.join(directory, name), "isdir": os.path.isdir(os.path.join(directory, name))}
             for name in entries if name.startswith(charts)]
    located = local_charts(found, directory, settings["version"], charts)
    missing = [chart for chart in charts if located["refs"][chart] is None]
    if missing:
        return None, ["chart %s version %s not found in the %s (looked for <chart>-%s.tgz and <chart>/; it holds: %s): "
                      "put them there (helm pull istio/%s --version %s) or set istio_install_version"
                      % (" and ".join(missing), settings["version"], source, settings["version"],
                         ", ".join(located["listing"]) or "nothing", missing[0], settings["version"])]
    checked = {}
    for chart in charts:
        ref = located["refs"][chart]
        try:
            checked[chart] = (ref, chart_metadata(ref))
        except Exception as exc:  # TegIstioError with the reason: reported as an unreadable chart
            checked[chart] = (ref, str(exc))
    return located["refs"], chart_errors(checked, settings["version"], source)


def _repository_chart_errors(settings, source, view):
    """Errors for charts in a repository, looked at with `helm show chart` (no file is left behind)."""
    url = settings["chart_repo_url"]
    binary = helm_binary(settings["helm_binary"])
    scratch = scratch_directory("teg-istio-helm.")
    checked = {}
    try:
        env = helm_environment(view.params, scratch)
        for chart in charts_for(settings.get("mesh_mode")):
            if url.startswith("oci://"):
                args = ["show", "chart", url.rstrip("/") + "/" + chart]
            else:
                args = ["show", "chart", chart, "--repo", url]
            args += ["--version", settings["version"]]
            if settings["chart_repo_username"]:
                args += ["--username", settings["chart_repo_username"], "--password", settings["chart_repo_password"]]
            rc, out, err = run_helm(binary, args, env, timeout=300)
            if rc != 0:
                return ["cannot get chart %s version %s from the %s: %s; set istio_install_version to a version that "
                        "source serves, or istio_install_chart_repo_url / istio_install_chart_path to a source that "
                        "has it" % (chart, settings["version"], source, helm_error_line(err or out))]
            try:
                checked[chart] = ("chart %s" % chart, yaml.safe_load(out) or {})
            except yaml.YAMLError as exc:
                checked[chart] = ("chart %s" % chart, str(exc).splitlines()[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return chart_errors(checked, settings["version"], source)


def _ambient_preflight(view, settings, facts, daemonsets):
    """(errors, warnings) of ambient mode's cluster checks: the Kubernetes version Istio supports for this
    release, and no CNI agent or ztunnel DaemonSet that these releases do not own."""
    error, warning = kubernetes_support(settings["version"], facts.get("kubernetes_version"))
    errors = ([error] if error else []) + foreign_daemonsets(daemonsets, settings["namespace"])
    return errors, [warning] if warning else []


def _daemonsets_in_place(daemonsets, namespace):
    """True when the cni and ztunnel DaemonSets of this namespace exist (read in the plan)."""
    here = set(((d.get("metadata") or {}).get("namespace"), (d.get("metadata") or {}).get("name"))
               for d in daemonsets or [])
    return all((namespace, name) in here for name in AMBIENT_DAEMONSETS.values())


# The label this collection gives the Helm releases it installs (helm --labels), by which it tells them from an
# Istio it did not install (decisions.release_ours).
OWN_RELEASE_LABELS = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def _istiod_releases(view, found):
    """{(namespace, release): status or None} of the Helm releases of every istiod found, one read per namespace."""
    wanted = {}
    for istiod in ([found["istiod"]] if found["istiod"] else []) + found["other_istiods"]:
        if istiod["installer"] == "helm":
            wanted.setdefault(istiod["helm_namespace"], set()).add(istiod["helm_release"])
    releases = {}
    for namespace, names in sorted(wanted.items()):
        for name, status in view.helm_releases(namespace, sorted(names)).items():
            releases[(namespace, name)] = status
    return releases


# What the plan reads of the Istio that runs: its Deployments (istiod and gateways) and every webhook (the injectors
# of every revision and the revision tags: an Istio found may be any revision).
_RUNNING_ISTIO = {
    # One list for istiod (istio=pilot) and the gateways (istio=<gateway>): both carry the label `istio`.
    "Istio Deployments": {"kind": "Deployment", "api_version": "apps/v1", "label_selectors": ["istio"]},
    "webhooks": {"kind": "MutatingWebhookConfiguration", "api_version": "admissionregistration.k8s.io/v1"},
}


def version_after(view, install):
    """The Istio version whose injector serves once this role has run with `install` (its settings: namespace,
    revision, version, manage, existing), read from the cluster as the plan reads it: an istiod it uses as it is
    (not this collection's, or istio_install_manage false) keeps its version; otherwise the version it installs
    or upgrades to; without one (the role run alone), the running istiod's. None when nothing tells.
    teg_istio_prep takes it to choose the Envoy pods' sidecar drain before this role has run."""
    read = view.read({}, _RUNNING_ISTIO)
    found = inventory(read["Istio Deployments"]["resources"], install["namespace"], install["revision"])
    manage = install["manage"]
    releases = _istiod_releases(view, found) if manage else {}
    used = existing_istiod(found, releases, install["namespace"], istiod_name(install["revision"]),
                           read["webhooks"]["resources"])
    if used is not None and (not manage or install["existing"] != "upgrade"):
        return used["version"]
    if manage and install["version"]:
        return install["version"]
    running = found["istiod"] or next(iter(found["other_istiods"]), None)
    return (running or {}).get("version")


def _use_existing(view, istiod, reason, warnings):
    """The plan that uses a running istiod as it is: verified (available, its injector registered, Istio's APIs
    served), nothing written, and its version, revision and injector predicted for the roles after this one."""
    errors = existing_errors(istiod)
    apis = view.facts(parts={"istio_apis"})["istio"]
    if not errors and not (apis["virtualservice_api_version"] and apis["peerauthentication_api_version"]):
        errors = ["istiod %s/%s runs but Istio's CRDs are not served (virtualservices.networking.istio.io, "
                  "peerauthentications.security.istio.io): repair that Istio install (its base chart or CRDs), then "
                  "run again" % (istiod["namespace"], istiod["name"])]
    if errors:
        return {"errors": errors, "warnings": warnings}
    used = dict((key, istiod[key]) for key in ("namespace", "name", "version", "revision", "injector", "tags",
                                               "injection_labels", "installer", "helm_release"))
    past = support_window_warning(istiod["version"], datetime.date.today(), "The running istiod %s/%s:"
                                  % (istiod["namespace"], istiod["name"]), "its owners should upgrade it")
    warnings = warnings + ([past] if past else [])
    return {"errors": [], "warnings": warnings, "changes": False, "settled": True,
            "writes": {"namespace": False, "releases": [], "uninstall": [], "check_mode_note": None},
            "releases": [], "used": used, "report": existing_report(istiod, reason),
            "predicts": {"istio": {"virtualservice_api_version": apis["virtualservice_api_version"],
                                   "peerauthentication_api_version": apis["peerauthentication_api_version"],
                                   "istiod": used}}}


def plan(view, settings, predicted, check_mode):
    if settings["state"] == "absent":
        return teardown(view, settings)
    errors = input_errors(settings["namespace"], settings["revision"], settings["version"], settings["chart_path"],
                          settings["chart_repo_url"])
    ambient_error = ambient_version_error(settings.get("mesh_mode"), settings["version"])
    if ambient_error:
        errors.append(ambient_error)
    if errors:
        return {"errors": errors}
    ambient = _ambient(settings)
    charts = charts_for(settings.get("mesh_mode"))
    names, values = _names(settings), _values(settings)
    manage = settings["manage"]
    # The Kubernetes version, for the preflight of either mode (ambient refuses an older one, sidecar warns).
    facts = view.facts(namespace=settings["namespace"], parts={"version"} if manage else ())
    specs = dict(_RUNNING_ISTIO)
    if ambient and manage:
        # Every DaemonSet of the cluster: another CNI agent or ztunnel may run in any namespace.
        specs["DaemonSets"] = {"kind": "DaemonSet", "api_version": "apps/v1"}
    read = view.read(facts, specs)
    daemonsets = read["DaemonSets"]["resources"] if "DaemonSets" in read else []
    webhooks = read["webhooks"]["resources"]
    found = inventory(read["Istio Deployments"]["resources"], settings["namespace"], settings["revision"])
    # Whose each istiod is (only to manage: with istio_install_manage false any istiod is used, and the Helm release
    # Secrets, which the rights of rbac/'s teg-istio alone do not cover, are not read).
    istiod_releases = _istiod_releases(view, found) if manage else {}
    warnings = []
    if found["gateways"]:
        warnings.append("Istio gateway Deployment(s) %s found. TEG is the ingress of this mesh, so this role never "
                        "installs Istio's gateway chart; remove the gateway if nothing else needs it."
                        % _where(found["gateways"]))
    if not manage:
        if found["istiod"] is None and not found["other_istiods"]:
            return {"errors": ["istio_install_manage is false but no Deployment %s (label app=istiod) runs in namespace "
                               "%s: install Istio first, or set istio_install_manage: true to install it with this role"
                               % (names["istiod"], settings["namespace"])], "warnings": warnings}
        # Any istiod, this collection's or not: manage false never installs or upgrades.
        used = existing_istiod(found, {}, settings["namespace"], names["istiod"], webhooks)
        return _use_existing(view, used, "istio_install_manage is false", warnings)
    # An istiod runs and none of them is this collection's: theirs, used as it is unless its owners asked for an
    # upgrade of its Helm release (istio_install_existing: upgrade).
    theirs = existing_istiod(found, istiod_releases, settings["namespace"], names["istiod"], webhooks)
    if theirs is not None and settings["existing"] != "upgrade":
        return _use_existing(view, theirs, "not installed by teg.istio (set istio_install_existing: upgrade to "
                             "upgrade its Helm release, keeping its values)", warnings)
    if theirs is not None:
        error = upgrade_existing_error(theirs, settings["namespace"], names["istiod"])
        if error:
            return {"errors": [error], "warnings": warnings}
    # The ambient releases are read in sidecar mode too: switching back uninstalls those this role installed.
    releases = view.helm_releases(settings["namespace"], [names[c] for c in charts_for("ambient")])
    foreign = dict((chart, releases[names[chart]]) for chart in charts_for("ambient")
                   if releases.get(names[chart]) is not None and not release_ours(releases[names[chart]]))
    if theirs is not None:
        # Their Istio, upgraded as its owners asked: only the releases they have, each with their values kept.
        missing = [names[chart] for chart in sorted(AMBIENT_RELEASES) if chart not in foreign]
        if ambient and missing:
            return {"errors": ["istio_install_mesh_mode is ambient, but the Istio in %s that teg.istio did not install "
                               "has no Helm release(s) %s, which istio_install_existing: upgrade does not install: add "
                               "its ambient parts the way it was installed, or set istio_install_existing: use"
                               % (settings["namespace"], ", ".join(missing))], "warnings": warnings}
        charts = tuple(chart for chart in charts if chart in foreign)
    elif foreign and settings["existing"] != "upgrade":
        return {"errors": ["Helm release(s) %s in %s exist but were not installed by teg.istio (no label %s=%s on their "
                           "release record): set istio_install_existing: upgrade to upgrade them keeping their values, or "
                           "remove them first" % (", ".join(names[c] for c in charts_for("ambient") if c in foreign),
                                                  settings["namespace"], MANAGED_BY_LABEL, MANAGED_BY_VALUE)],
                "warnings": warnings}
    for chart, release in foreign.items():
        values[chart] = kept_values(release.get("values"), values[chart])
    if ambient:
        errors, more = _ambient_preflight(view, settings, facts, daemonsets)
        warnings.extend(more)
        if errors:
            return {"errors": errors, "warnings": warnings}
    else:
        warning = sidecar_kubernetes_warning(settings["version"], facts.get("kubernetes_version"))
        warnings.extend([warning] if warning else [])
    past = support_window_warning(settings["version"], datetime.date.today(), "istio_install_version:",
                                  "set istio_install_version to a supported release")
    warnings.extend([past] if past else [])
    current = {chart: release_current(releases.get(names[chart]), chart, settings["version"], values[chart])
               for chart in charts}
    # Sidecar mode: the ztunnel and CNI releases an ambient run of this role installed go, ztunnel first (the
    # reverse of the install), before istiod drops its ambient profile. Never releases it did not install.
    uninstall = [] if ambient else [{"name": names[chart]} for chart in ("ztunnel", "cni")
                                    if releases.get(names[chart]) is not None and chart not in foreign]
    # istiod first: its version is the one the sidecars run.
    installed = [(chart, names[chart]) for chart in ("istiod", "base") + charts[2:] if chart in charts]
    errors = upgrade_errors(releases, installed, settings["version"], settings["namespace"])
    if errors:
        return {"errors": errors, "warnings": warnings}
    downgrade = downgrade_warning(releases, installed, settings["version"], settings["namespace"])
    if downgrade:
        warnings.append(downgrade)
    if uninstall or not all(current.values()):
        error = _helm_error(settings, view)
        if error:
            return {"errors": [error], "warnings": warnings}
    errors = release_errors(releases, settings["namespace"])
    istiod = found["istiod"]
    if istiod is not None and theirs is None and not istiod_ours(istiod, istiod_releases):
        errors.append("Deployment %s/%s (Istio %s) exists but is not part of Helm release %s%s: "
                      "set istio_install_manage: false to use that Istio as it is, or remove it first"
                      % (settings["namespace"], names["istiod"], istiod["version"] or "?", names["istiod"],
                         (" (it belongs to release %s)" % istiod["helm_release"]) if istiod["helm_release"]
                         else " (istioctl or operator install?)"))
    if errors:
        return {"errors": errors, "warnings": warnings}
    source = chart_source(settings["chart_path"], settings["chart_repo_url"])
    refs = dict((chart, chart) for chart in charts)
    if not all(current.values()):
        if settings["chart_path"]:
            located, errors = _local_chart_errors(settings, source)
            refs = located or refs
        else:
            errors = _repository_chart_errors(settings, source, view)
        if errors:
            return {"errors": errors, "warnings": warnings}
    to_install = [{"name": names[chart], "chart": refs[chart], "values": values[chart],
                   # The label that tells this collection's releases from others', never put on a release it did not
                   # install.
                   "labels": {} if chart in foreign else OWN_RELEASE_LABELS,
                   # helm --force replaces objects instead of patching them: only with the owners' consent, for a
                   # release left failed.
                   "force": settings["helm_force"] and (releases.get(names[chart]) or {}).get("status") == "failed"}
                  for chart in charts if not current[chart]]
    create_namespace = not facts["namespace_exists"]
    note = None
    if create_namespace or to_install or uninstall:
        done = []
        if uninstall:
            done.append("uninstall %s (sidecar mode)" % " and ".join(r["name"] for r in uninstall))
        if create_namespace:
            done.append("create namespace %s" % settings["namespace"])
        if to_install:
            done.append("install or upgrade %s with charts %s from the %s (found and checked; helm renders and "
                        "applies them only in a real run, so the API server has not validated their objects)"
                        % (" and ".join(r["name"] for r in to_install), settings["version"], source))
        kept = [r["name"] for r in to_install if not r["labels"]]
        if kept:
            done.append("keeping the user-supplied values of %s (not installed by teg.istio), the role's settings "
                        "merged over them" % " and ".join(kept))
        note = "would " + ", ".join(done)
    predicts = {}
    if to_install or create_namespace:
        istiod_now = istiod or {}
        predicts = {"istio": dict(predicted_apis(settings["version"]), istiod={
            "namespace": settings["namespace"], "name": names["istiod"],
            "version": istiod_image_version(values["istiod"], settings["version"]) if to_install
            else istiod_now.get("version"),
            "revision": settings["revision"] or "default"})}
    if create_namespace:
        predicts["namespaces"] = {settings["namespace"]: {MANAGED_BY_LABEL: MANAGED_BY_VALUE}}
    settled = not (create_namespace or to_install or uninstall) and bool(istiod and istiod["available"]) \
        and any((w.get("metadata") or {}).get("name") == names["injector"] for w in webhooks) \
        and (not ambient or _daemonsets_in_place(daemonsets, settings["namespace"]))
    return {
        "errors": [],
        "warnings": warnings,
        # A run with nothing to install that finds istiod not (yet) available still has to wait for it.
        "changes": not settled,
        "writes": {
            "namespace": create_namespace,
            # In install order; every release of the mode, by name, for check mode and site.yml's planning.
            "releases": to_install,
            "uninstall": uninstall,
            # For helm_releases: charts by name from a repository, else paths in the local directory.
            "chart_repo_url": None if settings["chart_path"] else settings["chart_repo_url"],
            "chart_version": None if settings["chart_path"] else settings["version"],
            "check_mode_note": note,
        },
        "releases": [names[chart] for chart in charts],
        "predicts": predicts,
        # istiod and its injector (and in ambient the DaemonSets) in place as read, and nothing to install:
        # nothing to wait for.
        "settled": settled,
    }


def _deployment_state(deployment):
    if deployment is None:
        return "missing"
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Available":
            return "available" if condition.get("status") == "True" else "not Available"
    return "not Available"


def _daemonset_state(daemonset):
    """"ready" when every pod the DaemonSet schedules is ready (at least one), else what it is."""
    if daemonset is None:
        return "missing"
    status = daemonset.get("status") or {}
    desired = status.get("desiredNumberScheduled") or 0
    ready = status.get("numberReady") or 0
    return "ready" if desired > 0 and ready >= desired else "%d of %d pods ready" % (ready, desired)


def _ambient_daemonsets(view, settings):
    """{DaemonSet name: state} of the cni and ztunnel DaemonSets (ambient mode), else {}."""
    if not _ambient(settings):
        return {}
    return dict((name, _daemonset_state(view.get("apps/v1", "DaemonSet", name, settings["namespace"])))
                for name in (AMBIENT_DAEMONSETS["cni"], AMBIENT_DAEMONSETS["ztunnel"]))


def verify(view, settings, predicted, check_mode):
    """After the install or upgrade: wait until istiod is Available and its sidecar injector registered, and in ambient
    mode the CNI agent and ztunnel DaemonSets ready (polling as rollout.poll_pauses says, up to
    istio_install_wait_timeout), check that the Istio APIs are served, and say what runs. (An Istio used as it is
    was verified by the plan, which reports it.)"""
    names = _names(settings)
    timeout = settings["wait_timeout"]
    deadline = time.monotonic() + timeout
    pauses = poll_pauses(2)
    while True:
        deployment = view.get("apps/v1", "Deployment", names["istiod"], settings["namespace"])
        webhook = view.get("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", names["injector"])
        state = _deployment_state(deployment)
        daemonsets = _ambient_daemonsets(view, settings)
        if (state == "available" and webhook is not None and all(s == "ready" for s in daemonsets.values())) \
                or time.monotonic() >= deadline:
            break
        time.sleep(next(pauses))
    if state != "available":
        return {"errors": ["Deployment %s/%s is %s after %ss: look at `kubectl -n %s describe deployment %s` and its "
                           "pods' events, or raise istio_install_wait_timeout"
                           % (settings["namespace"], names["istiod"], "missing" if state == "missing" else "not Available",
                              timeout, settings["namespace"], names["istiod"])]}
    if webhook is None:
        return {"errors": ["MutatingWebhookConfiguration %s (Istio's sidecar injector for revision %s) does not exist, so "
                           "no pod would get a sidecar: %s"
                           % (names["injector"], settings["revision"] or "default",
                              "the istiod chart did not create it; check istio_install_istiod_values "
                              "(sidecarInjectorWebhook)")]}
    for name, ds_state in sorted(daemonsets.items()):
        if ds_state != "ready":
            return {"errors": ["DaemonSet %s/%s is %s after %ss: look at `kubectl -n %s describe daemonset %s` and its "
                               "pods' events, or raise istio_install_wait_timeout"
                               % (settings["namespace"], name, ds_state, timeout, settings["namespace"], name)]}
    istio = view.facts(parts={"istio_apis"})["istio"]
    if not istio["virtualservice_api_version"] or not istio["peerauthentication_api_version"]:
        return {"errors": ["Istio's CRDs are not served (virtualservices.networking.istio.io, "
                           "peerauthentications.security.istio.io): the base chart did not install them; check "
                           "istio_install_base_values"]}
    now = inventory([deployment], settings["namespace"], settings["revision"])["istiod"]
    return {"errors": [], "report": "Istio %s: Deployment %s/%s (revision %s) available, sidecar injector %s registered, "
                                    "%s and %s served%s"
            % (now["version"] or "(untagged image)", settings["namespace"], names["istiod"], now["revision"],
               names["injector"], istio["virtualservice_api_version"], istio["peerauthentication_api_version"],
               ("; ambient: DaemonSets %s ready" % " and ".join(sorted(daemonsets))) if daemonsets else "")}


def teardown(view, settings):
    """The reverse of the install, of what this collection installed only: ztunnel and istio-cni (when an ambient run
    installed them), istiod, then base and, when asked, the CRDs, unless another istiod still uses them; the
    namespace only when this role created it and nothing else of Istio stays there. A release this collection did not
    install (decisions.release_ours), or an istiod installed another way, is left as it is, and said so."""
    names = _names(settings)
    if not settings["manage"]:
        return {"errors": [], "writes": {"releases": [], "delete": []}, "changes": False}
    facts = view.facts()
    reads = {
        "Istio Deployments": {"kind": "Deployment", "api_version": "apps/v1", "label_selectors": ["istio"]},
        "namespace": {"kind": "Namespace", "api_version": "v1", "name": settings["namespace"]},
    }
    if settings["remove_crds"]:
        reads["CRDs"] = {"kind": "CustomResourceDefinition", "api_version": "apiextensions.k8s.io/v1"}
    read = view.read(facts, reads)
    found = inventory(read["Istio Deployments"]["resources"], settings["namespace"], settings["revision"])
    order = [names["ztunnel"], names["cni"], names["istiod"], names["base"]]
    releases = view.helm_releases(settings["namespace"], order)
    theirs = [name for name in order if releases.get(name) is not None and not release_ours(releases[name])]
    istiod = found["istiod"]
    # Every istiod that stays: the other revisions and namespaces, and this one unless this collection installed it.
    ours = istiod is not None and istiod["installer"] == "helm" and istiod["helm_namespace"] == settings["namespace"] \
        and release_ours(releases.get(istiod["helm_release"]))
    staying = found["other_istiods"] + ([istiod] if istiod is not None and not ours else [])
    # The reverse of the install: ztunnel and the CNI agent (ambient mode's) before istiod.
    uninstall = [{"name": names["ztunnel"]}, {"name": names["cni"]}, {"name": names["istiod"]}]
    warnings = []
    if staying:
        # The base chart's CRDs and cluster roles serve every istiod of the cluster.
        if releases.get(names["base"]) is not None and names["base"] not in theirs:
            warnings.append("release %s kept, since istiod Deployment(s) %s still use its CRDs and cluster roles"
                            % (names["base"], _where(staying)))
    else:
        uninstall.append({"name": names["base"]})
    kept = (["Helm release(s) %s in %s" % (", ".join(theirs), settings["namespace"])] if theirs else []) + \
        (["Deployment %s/%s" % (istiod["namespace"], istiod["name"])] if istiod and istiod["installer"] != "helm" else [])
    delete = []
    if settings["remove_crds"] and not staying and not theirs:
        # Helm keeps CRDs on uninstall, as Istio's uninstall guide notes; deleting them deletes every Istio
        # resource of the cluster.
        delete.extend(crd_deletions(read["CRDs"]["resources"]))
    namespace = (read["namespace"]["resources"] or [None])[0]
    if namespace is not None and ((namespace["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE) \
            and not theirs and not [o for o in staying if o["namespace"] == settings["namespace"]]:
        delete.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": settings["namespace"]}})
    to_uninstall = [r for r in uninstall if releases.get(r["name"]) is not None and r["name"] not in theirs]
    error = _helm_error(settings, view) if to_uninstall else None
    if error:
        return {"errors": [error]}
    return {"errors": [], "writes": {"releases": to_uninstall, "delete": delete}, "warnings": warnings,
            "changes": bool(to_uninstall or delete),
            "kept": ("%s: not installed by teg.istio, so left untouched" % " and ".join(kept)) if kept else None}
