# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module helm_releases, run in-process by its action plugin or as a module
process (module_utils/_k8s_module.py). helm runs as a subprocess of whichever process runs this. It can
change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import os
import shutil
import tempfile

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.teg.istio.plugins.module_utils._helm import (
    chart_metadata,
    helm_binary,
    helm_environment,
    helm_error_line,
    helm_force_args,
    helm_hint,
    helm_major,
    helm_unreachable,
    helm_wait_args,
    run_helm,
)
from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    TegIstioError,
    api_error_message,
    connect,
    get_or_none,
)
from ansible_collections.teg.istio.plugins.module_utils.facts import read_helm_releases
from ansible_collections.teg.istio.plugins.module_utils.names import MANAGED_BY_LABEL, MANAGED_BY_VALUE, describe

try:
    from kubernetes.dynamic.exceptions import DynamicApiError
except ImportError:  # reported by AnsibleK8SModule's own dependency check
    DynamicApiError = Exception

ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(
    namespace=dict(type="str", required=True),
    create_namespace=dict(type="bool", default=False),
    releases=dict(type="list", elements="dict", required=True, options=dict(
        name=dict(type="str", required=True),
        chart=dict(type="str"),
        values=dict(type="dict", default={}),
        labels=dict(type="dict", default={}),
        force=dict(type="bool", default=False),
    )),
    chart_repo_url=dict(type="str"),
    chart_repo_username=dict(type="str"),
    chart_repo_password=dict(type="str", no_log=True),
    chart_version=dict(type="str"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    binary_path=dict(type="path"),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=300),
)
ARGUMENT_CONSTRAINTS = dict(required_together=[("chart_repo_username", "chart_repo_password")],
                            required_by={"chart_repo_url": ("chart_version",)})


def _chart_ref(params, chart):
    url = params["chart_repo_url"]
    if url and url.startswith("oci://"):
        return url.rstrip("/") + "/" + chart
    return chart


def _repo_args(params):
    args = []
    if params["chart_repo_url"] and not params["chart_repo_url"].startswith("oci://"):
        args += ["--repo", params["chart_repo_url"]]
    if params["chart_version"]:
        args += ["--version", params["chart_version"]]
    if params["chart_repo_username"]:
        args += ["--username", params["chart_repo_username"], "--password", params["chart_repo_password"]]
    return args


def expected_chart(params, chart):
    """The "<name>-<version>" Helm records for a release of `chart` (a path, or a name in the repository)."""
    if params["chart_repo_url"]:
        return "%s-%s" % (chart.rstrip("/").rsplit("/", 1)[-1], params["chart_version"])
    meta = chart_metadata(chart)
    return "%s-%s" % (meta.get("name"), meta.get("version"))


def release_in_place(current, chart, values):
    """True when `current` (the newest revision, as facts.read_helm_releases reads it) is deployed from
    `chart` ("<name>-<version>") with exactly `values` as user-supplied values: helm would then only make
    a new revision of the same thing."""
    current = current or {}
    return (current.get("status") == "deployed" and current.get("chart") == chart
            and (current.get("values") or {}) == (values or {}))


class _Helm(object):
    def __init__(self, module, scratch):
        params = module.params
        self.binary = helm_binary(params["binary_path"])
        if not self.binary:
            raise TegIstioError("no helm binary on the PATH: install Helm (3.13 or later, or 4) or set binary_path to "
                                "its full path")
        self.env = helm_environment(params, scratch)
        self.namespace = params["namespace"]
        self.timeout = params["wait_timeout"]
        self.wait = params["wait"]
        # Helm 4 renamed and changed flags (helm_wait_args, helm_force_args): the version decides which to pass.
        rc, out, err = run_helm(self.binary, ["version", "--short"], self.env, timeout=60)
        if rc != 0:
            raise TegIstioError("helm binary %s cannot run (%s): install Helm (3.13 or later, or 4) or set binary_path "
                                "to one that runs" % (self.binary, helm_error_line(err or out)))
        self.major = helm_major(out)

    def run(self, args):
        # Give helm its own timeout's worth and a minute more before giving up on the process.
        return run_helm(self.binary, list(args) + ["--namespace", self.namespace]
                        + helm_wait_args(self.major, self.wait, self.timeout), self.env, timeout=self.timeout + 60)


def _create_namespace(module, client):
    name = module.params["namespace"]
    if get_or_none(client, "v1", "Namespace", name) is not None:
        return False
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}}}
    try:
        # K8SClient adds dryRun=All in check mode.
        client.create(client.resource("Namespace", "v1"), body)
    except DynamicApiError as exc:
        message = api_error_message(exc, "create", describe("Namespace", name))
        if getattr(exc, "status", None) == 403:
            message = message.split("; grant")[0] + ("; create the namespace beforehand or grant create on namespaces "
                                                     "to the identity running the playbook (see docs/rbac.md)")
        raise TegIstioError(message) from exc
    return True


def _install(module, helm, release, chart, scratch, current):
    values_file = os.path.join(scratch, "%s.values.json" % release["name"])
    with open(values_file, "w") as handle:
        json.dump(release["values"] or {}, handle)
    args = ["upgrade", "--install", release["name"], _chart_ref(module.params, chart), "--values", values_file]
    args += _repo_args(module.params)
    if release["labels"]:
        # Labels of the release record (Helm >= 3.13), merged by helm with those the release already has.
        args += ["--labels", ",".join("%s=%s" % item for item in sorted(release["labels"].items()))]
    if release["force"]:
        args += helm_force_args(helm.major, (current or {}).get("apply_method"))
    rc, out, err = helm.run(args)
    if rc != 0:
        line = helm_error_line(err or out)
        if helm_unreachable(line):
            # helm stops where the API server went away: the release record may be left pending, which the next
            # run names with the command that recovers it (istio_install's plan, docs/bad-input.md).
            raise TegIstioError("cannot reach the Kubernetes API server while helm installed or upgraded release %s "
                                "(chart %s) in namespace %s: %s; check K8S_AUTH_HOST / the kubeconfig server address "
                                "and that the API server is running, then run again"
                                % (release["name"], chart, helm.namespace, line))
        raise TegIstioError("helm could not install or upgrade release %s (chart %s) in namespace %s: %s; %s"
                            % (release["name"], chart, helm.namespace, line, helm_hint(line)))


def _uninstall(helm, name):
    rc, out, err = helm.run(["uninstall", name])
    if rc != 0:
        line = helm_error_line(err or out)
        raise TegIstioError("helm could not uninstall release %s in namespace %s: %s; %s"
                            % (name, helm.namespace, line, helm_hint(line)))


def run(module):
    params = module.params
    client = connect(module)
    names = [r["name"] for r in params["releases"]]
    current = read_helm_releases(client, params["namespace"], names)
    result = {"changed": False, "releases": {}}
    diffs = []
    scratch = tempfile.mkdtemp(prefix="teg-istio-helm.")
    try:
        if params["state"] == "present" and params["create_namespace"]:
            result["namespace_created"] = _create_namespace(module, client)
            result["changed"] = result["namespace_created"]
        helm = None
        for release in params["releases"]:
            name = release["name"]
            if params["state"] == "absent":
                if current.get(name) is None:
                    result["releases"][name] = {"action": "absent"}
                    continue
                action = "uninstalled"
            else:
                if not release["chart"]:
                    raise TegIstioError("release %s has no chart: give its chart (a path, or a name in "
                                        "chart_repo_url)" % name)
                try:
                    chart = expected_chart(params, release["chart"])
                except TegIstioError as exc:
                    raise TegIstioError("%s is not a readable Helm chart (%s): replace it" % (release["chart"], exc))
                if release_in_place(current.get(name), chart, release["values"]) and not release["force"]:
                    result["releases"][name] = {"action": "unchanged", "chart": chart}
                    continue
                action = "upgraded" if current.get(name) else "installed"
                diffs.append({"before_header": "release %s values" % name, "after_header": "release %s values" % name,
                              "before": (current.get(name) or {}).get("values") or {}, "after": release["values"] or {}})
            result["changed"] = True
            result["releases"][name] = {"action": action}
            if module.check_mode:
                continue
            if helm is None:
                helm = _Helm(module, scratch)
            try:
                if action == "uninstalled":
                    _uninstall(helm, name)
                else:
                    _install(module, helm, release, release["chart"], scratch, current.get(name))
            except TegIstioError as exc:
                raise TegIstioError(str(exc), result) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not module.check_mode:
        after = read_helm_releases(client, params["namespace"], names)
        for name, entry in result["releases"].items():
            if after.get(name):
                entry.update(revision=after[name]["revision"], status=after[name]["status"], chart=after[name]["chart"])
    if module._diff and diffs:
        result["diff"] = diffs
    done = ["%s %s" % (entry["action"], name) for name, entry in result["releases"].items()
            if entry["action"] not in ("unchanged", "absent")]
    result["msg"] = (("would have " if module.check_mode else "") + ", ".join(done)) if done else \
        "every release already as wanted in %s" % params["namespace"]
    return result
