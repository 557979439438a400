"""`make matrix`: the compact end-to-end run and the in-process parity test, once per ansible-core version, against
ONE local control plane (docs/support-matrix.md).

    matrix.py [--only NAME ...]

Per combination, a virtualenv (cached by version under $TEG_ISTIO_CACHE/matrix/) with the `ansible` bundle that
ships that ansible-core (the bundle is this project's only source of kubernetes.core: Galaxy is unreachable), then
one pytest session with that virtualenv's Python on the shared cluster (conftest.py's TEG_ISTIO_SHARED_CLUSTER):
site.yml --check (zero writes, from the API server's audit log), site.yml, a rerun (zero writes), verify.yml (and a
drift it names), one bad input refused before any write, teardown.yml, and every module's in-process/module-process
parity. Prints one line per combination and the count; a report-only combination (a release candidate) is printed
but not counted.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "localcp"))
import localcp  # noqa: E402  pylint: disable=wrong-import-position

CACHE = Path(os.environ.get("TEG_ISTIO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "teg-istio")
OUTPUT = REPO / "tests" / "output" / "matrix"
FLAVOUR = "current"

# name -> (python, what pip installs, counted). The ansible bundles: 12.3.0 ships ansible-core 2.19 and
# kubernetes.core 6.2 (today's .venv); 13.8.0 ships 2.20; 14.5.0 ships 2.21.5 and kubernetes.core 6.6.0.
# 2.22.0rc1 has no bundle release yet: 14.5.0's collections with that ansible-core, a report-only line.
BUILT_PYTHON = "built"
COMBINATIONS = {
    "2.19": ("python3.11", [["ansible==12.3.0"]], True),
    "2.20": (BUILT_PYTHON, [["ansible==13.8.0"]], True),
    "2.21": (BUILT_PYTHON, [["ansible==14.5.0"]], True),
    "2.22.0rc1": (BUILT_PYTHON, [["ansible==14.5.0"], ["ansible-core==2.22.0rc1"]], False),
}
# The rest of what the tests import, at the versions requirements-dev.txt pins.
TEST_PACKAGES = ("kubernetes", "jsonpatch", "PyYAML", "pytest")
SELECTION = [
    "tests/integration/test_site.py::test_check_mode_on_a_fresh_cluster_reports_changes_and_writes_nothing",
    "tests/integration/test_site.py::test_site_applies_every_step_with_the_served_api_versions",
    "tests/integration/test_site.py::test_a_second_run_changes_nothing_and_writes_nothing",
    "tests/integration/test_site.py::test_verify_names_a_drifted_object_in_one_line",
    "tests/integration/test_site.py::test_the_default_teardown_leaves_istio_and_nothing_else",
    "tests/integration/test_bad_input.py::test_bad_variables_stop_before_any_write[app-namespace-missing]",
    "tests/integration/test_inprocess.py::test_every_module_gives_the_same_result_in_process_and_as_a_module_process",
]


def log(msg):
    print(f"[matrix] {msg}", file=sys.stderr, flush=True)


def pinned_test_packages():
    pins = {}
    for line in (REPO / "requirements-dev.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)", line)
        if match and match.group(1) in TEST_PACKAGES:
            pins[match.group(1)] = match.group(0)
    return [pins[name] for name in TEST_PACKAGES]


def interpreter(python):
    if python != BUILT_PYTHON:
        return python
    return subprocess.run([str(REPO / "tools" / "python.sh")], check=True, capture_output=True,
                          text=True).stdout.strip()


def virtualenv(name, python, installs):
    """The combination's virtualenv, made once per (Python, install list): a stamp records what it holds."""
    python = interpreter(python)
    version = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    steps = [list(step) for step in installs]
    steps[0] += pinned_test_packages()
    venv = CACHE / "matrix" / f"ansible-core-{name}-python-{version}"
    stamp = venv / "teg-istio-matrix.json"
    if stamp.exists() and json.loads(stamp.read_text()) == steps:
        return venv
    log(f"{name}: creating {venv}")
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    for step in steps:
        # A later step may replace a package the bundle pins (the release candidate): pip says so and goes on.
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *step],
                       check=True)
    stamp.write_text(json.dumps(steps))
    return venv


def versions(venv, cluster_env):
    probe = ("import json, sys, ansible.release, ansible_collections.kubernetes.core as kc, pathlib;"
             "m = json.loads((pathlib.Path(kc.__path__[0]) / 'MANIFEST.json').read_text());"
             "print(json.dumps({'ansible-core': ansible.release.__version__, "
             "'kubernetes.core': m['collection_info']['version'], "
             "'python': '%d.%d.%d' % sys.version_info[:3]}))")
    found = json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", probe], check=True, capture_output=True,
                                      text=True).stdout)
    helm = subprocess.run(["helm", "version", "--template", "{{.Version}}"], env=cluster_env, check=True,
                          capture_output=True, text=True).stdout.strip()
    server = json.loads(subprocess.run(["kubectl", "version", "-o", "json"], env=cluster_env, check=True,
                                       capture_output=True, text=True).stdout)["serverVersion"]["gitVersion"]
    found.update(helm=helm, kubernetes=server, istio=localcp.MATRIX[FLAVOUR]["istio"].removeprefix("istio-"))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(COMBINATIONS), help="run only these combinations")
    args = parser.parse_args(argv)
    state_dir = OUTPUT / "localcp"
    env = dict(os.environ, LOCALCP_DIR=str(state_dir))
    localcp_cmd = [sys.executable, str(REPO / "tests" / "localcp" / "localcp.py")]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    subprocess.run(localcp_cmd + ["up", "--matrix", FLAVOUR], env=env, check=True)
    cluster_env = dict(env)
    for line in subprocess.run(localcp_cmd + ["env"], env=env, check=True, capture_output=True,
                               text=True).stdout.splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        cluster_env[key] = value.replace("$PATH", os.environ["PATH"])
    lines, passed, counted = [], 0, 0
    try:
        for name, (python, installs, counts) in COMBINATIONS.items():
            if args.only and name not in args.only:
                continue
            start = time.monotonic()
            venv = virtualenv(name, python, installs)
            prepared = time.monotonic()
            test_env = dict(os.environ, MATRIX=FLAVOUR, TEG_ISTIO_SHARED_CLUSTER=str(state_dir),
                            PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
            test_env.pop("VIRTUAL_ENV", None)
            proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   f"--basetemp={OUTPUT / ('pytest-' + name)}", *SELECTION], cwd=REPO, env=test_env,
                                  check=False)
            found = versions(venv, cluster_env)
            outcome = "passed" if proc.returncode == 0 else "failed"
            label = "" if counts else " (report only)"
            line = (f"matrix: ansible-core={found['ansible-core']} kubernetes.core={found['kubernetes.core']} "
                    f"python={found['python']} helm={found['helm']} kubernetes={found['kubernetes']} "
                    f"istio={found['istio']}: {outcome}{label}")
            log(f"{name}: virtualenv {prepared - start:.0f} s, tests {time.monotonic() - prepared:.0f} s")
            lines.append(line)
            print(line, flush=True)
            if counts:
                counted += 1
                passed += proc.returncode == 0
    finally:
        subprocess.run(localcp_cmd + ["down"], env=env, check=False)
    print("\n".join(lines))
    print(f"matrix: {passed}/{counted} passed")
    return 0 if passed == counted else 1


if __name__ == "__main__":
    sys.exit(main())
