# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: helm as a subprocess of the process that runs the task (in-process, that is
ansible-playbook's worker), with the connection settings kubernetes.core's helm modules give it; a
chart's metadata read without helm; helm's failures turned into one line. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

try:
    import yaml
except ImportError:  # reported by AnsibleK8SModule's own dependency check
    yaml = None

from ansible_collections.teg.istio.plugins.module_utils.names import TegIstioError

# module option -> (the K8S_AUTH_* names get_api_client reads, the helm environment variable), as
# kubernetes.core.helm maps them (module_utils/helm.py, _prepare_helm_environment).
_CONNECTION = (
    ("context", ("K8S_AUTH_CONTEXT",), "HELM_KUBECONTEXT"),
    ("api_key", ("K8S_AUTH_API_KEY",), "HELM_KUBETOKEN"),
    ("host", ("K8S_AUTH_HOST",), "HELM_KUBEAPISERVER"),
    ("ca_cert", ("K8S_AUTH_CA_CERT", "K8S_AUTH_SSL_CA_CERT"), "HELM_KUBECAFILE"),
)


def _setting(params, option, variables):
    if params.get(option) not in (None, ""):
        return params[option]
    for variable in variables:
        if os.environ.get(variable):
            return os.environ[variable]
    return None


def helm_environment(params, scratch):
    """The environment helm runs with: this process's, plus the connection settings of the module's
    options or K8S_AUTH_* (what AWX injects), so that helm talks to the cluster the client talks to. A
    kubeconfig given as a dict is written into `scratch`."""
    env = dict(os.environ)
    for option, variables, helm_variable in _CONNECTION:
        value = _setting(params, option, variables)
        if value:
            env[helm_variable] = str(value)
    validate = params.get("validate_certs")
    if validate is None:
        for variable in ("K8S_AUTH_VALIDATE_CERTS", "K8S_AUTH_VERIFY_SSL"):
            if os.environ.get(variable):
                validate = os.environ[variable].lower() not in ("0", "false", "no")
    if validate is False:
        env["HELM_KUBEINSECURE_SKIP_TLS_VERIFY"] = "true"
    kubeconfig = params.get("kubeconfig") or os.environ.get("K8S_AUTH_KUBECONFIG")
    if isinstance(kubeconfig, dict):
        path = os.path.join(scratch, "kubeconfig")
        with open(path, "w") as handle:
            json.dump(kubeconfig, handle)
        kubeconfig = path
    if kubeconfig:
        env["KUBECONFIG"] = os.path.expanduser(kubeconfig)
    return env


def helm_binary(binary_path):
    """The helm to run: `binary_path`, else the first helm on PATH (None when there is none)."""
    return binary_path or shutil.which("helm")


def run_helm(binary, args, env, timeout=None):
    """(rc, stdout, stderr) of helm with `args`; rc 127 with the reason when it cannot be started."""
    try:
        proc = subprocess.run([binary] + list(args), env=env, capture_output=True, text=True, check=False,
                              timeout=timeout)
    except OSError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired as exc:
        return 124, "", "helm %s did not finish within %ss" % (args[0], exc.timeout)
    return proc.returncode, proc.stdout, proc.stderr


def helm_major(short_version):
    """Helm's major version from `helm version --short` ("v4.3.2", "v3.19.5+g1a2b3c4"); 3 when unreadable (the
    flags every Helm 3 knows, which Helm 4 still accepts, deprecated)."""
    match = re.match(r"^v?([0-9]+)\.", (short_version or "").strip())
    return int(match.group(1)) if match else 3


def helm_wait_args(major, wait, timeout):
    """The wait and timeout flags of `helm upgrade --install` and `helm uninstall`. Helm 4 made --wait a strategy
    (watcher, hookOnly, legacy; hookOnly, no waiting for the release's objects, when the flag is absent). Helm 4 gets
    legacy, Helm 3's polling readiness checks: watcher, what a bare --wait means there, needs list and watch rights
    on every kind the charts deploy (helm.sh/helm/v4 pkg/kube/client.go, StatusWatcherStrategy), which the least
    privileged identity of rbac/ does not hold and Helm 3 never needed; legacy needs what Helm 3 needed. Named, so
    that the choice does not hang on a default. Helm 3's --wait is a boolean."""
    if not wait:
        return ["--timeout", "%ds" % timeout]
    return ["--wait=legacy" if major >= 4 else "--wait", "--timeout", "%ds" % timeout]


def helm_force_args(major, apply_method):
    """The flag that forces an upgrade over what is in the cluster. Helm 3: --force (replace changed objects).
    Helm 4 renamed it --force-replace and refuses it together with server-side apply, which it uses for every release
    it installs (the release record's apply_method "ssa"; `--server-side auto` keeps a release's method on upgrade):
    such a release is forced with --force-conflicts (take over the fields another field manager owns), a release
    applied client-side (apply_method "csa", or none: installed by Helm 3) with --force-replace."""
    if major < 4:
        return ["--force"]
    return ["--force-conflicts"] if apply_method == "ssa" else ["--force-replace"]


def helm_error_line(text):
    """The one line that says why helm failed: its last "Error: ..." line, else its first line. Where that line
    only counts errors ("3 errors occurred:", helm's list of errors), the first error listed under it."""
    lines = (text or "").splitlines()
    errors = [i for i, line in enumerate(lines) if line.strip().startswith("Error:")]
    if not errors:
        return re.sub(r"\s+", " ", next((ln.strip() for ln in lines if ln.strip()), "unknown error"))
    line = lines[errors[-1]].strip()[len("Error:"):].strip()
    if re.search(r"errors? occurred:$", line):
        listed = next((ln.strip()[1:].strip() for ln in lines[errors[-1] + 1:] if ln.strip().startswith("*")), "")
        line = "%s %s" % (line, listed) if listed else line
    return re.sub(r"\s+", " ", line)


# What helm (Go's net/http and client-go) says when the API server refused, dropped or never answered.
_UNREACHABLE = re.compile(r"connection refused|connection reset|\bEOF\b|client connection lost|i/o timeout|"
                          r"Kubernetes cluster unreachable|no such host|TLS handshake timeout", re.IGNORECASE)


def helm_unreachable(line):
    """True when helm's error line says the API server could not be reached (or went away mid-request)."""
    return bool(_UNREACHABLE.search(line or ""))


def helm_hint(line):
    """The fix to suggest for a helm failure line, by what helm said."""
    text = (line or "").lower()
    if "invalid ownership metadata" in text or "exists and cannot be imported" in text:
        return ("an object of that name already exists outside this Helm release (another Istio install?): "
                "remove it, or set istio_install_manage: false to use the Istio that is there")
    if "forbidden" in text:
        return "grant the identity running the playbook the rights the chart needs (see docs/rbac.md)"
    if "kubeversion" in text:
        return "pick an istio_install_version that supports this Kubernetes version"
    if "conflict occurred while applying" in text:
        # Helm 4 applies server-side: another field manager (kubectl edit, a controller) owns a field the chart sets.
        return ("another field manager owns a field the chart sets (Helm 4 applies server-side): undo that change, or "
                "force the failed release's upgrade (istio_install_helm_force: true; helm --force-conflicts)")
    if "another operation" in text:
        return "wait for the other helm operation to finish, or roll it back, then run again"
    return "see `helm status` and `helm history` of the release"


def chart_metadata(ref):
    """The Chart.yaml of a chart archive (<chart>-<version>.tgz, what `helm pull` writes) or folder, read
    without helm; TegIstioError with the reason when it is not a readable chart."""
    try:
        if os.path.isdir(ref):
            with open(os.path.join(ref, "Chart.yaml")) as handle:
                text = handle.read()
        else:
            with tarfile.open(ref, "r:*") as archive:
                member = next((m for m in archive.getmembers()
                               if m.isfile() and m.name.count("/") == 1 and m.name.endswith("/Chart.yaml")), None)
                if member is None:
                    raise TegIstioError("no Chart.yaml at the top of the archive")
                text = archive.extractfile(member).read().decode("utf-8")
        meta = yaml.safe_load(text)
    except (OSError, tarfile.TarError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TegIstioError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if not isinstance(meta, dict):
        raise TegIstioError("its Chart.yaml is not a mapping")
    return meta


def scratch_directory(prefix):
    return tempfile.mkdtemp(prefix=prefix)
