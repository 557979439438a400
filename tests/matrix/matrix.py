"""`make matrix`: the compact end-to-end run and the in-process parity test, once per ansible-core version, against
ONE local control plane (docs/support-matrix.md).

    matrix.py [run|report] [--only NAME ...] [--skip-own] [--results FILE] [--junit JUNIT_XML]

Per combination, a virtualenv (cached by version under $TEG_ISTIO_CACHE/matrix/) with the `ansible` bundle that
ships that ansible-core (the bundle is this project's only source of kubernetes.core: Galaxy is unreachable), then
one pytest session with that virtualenv's Python on the shared cluster (conftest.py's TEG_ISTIO_SHARED_CLUSTER):
site.yml --check (zero writes, from the API server's audit log), site.yml, a rerun (zero writes), verify.yml (and a
drift it names), one bad input refused before any write, teardown.yml, and every module's in-process/module-process
parity. Prints one line per combination and the count; a report-only combination (a release candidate) is printed
but not counted.

`make test` runs the same selection on the project's own interpreter inside its current lane (among the lane's
other tests): there `run --skip-own` runs the other combinations after the legacy lane, and `report --junit` reads
the lane's outcome of the selection from its JUnit XML instead of running it a second time.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
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


def interpreter_versions(python):
    """ansible-core, kubernetes.core and Python of an interpreter's environment."""
    probe = ("import json, sys, ansible.release, ansible_collections.kubernetes.core as kc, pathlib;"
             "m = json.loads((pathlib.Path(kc.__path__[0]) / 'MANIFEST.json').read_text());"
             "print(json.dumps({'ansible-core': ansible.release.__version__, "
             "'kubernetes.core': m['collection_info']['version'], "
             "'python': '%d.%d.%d' % sys.version_info[:3]}))")
    return json.loads(subprocess.run([str(python), "-c", probe], check=True, capture_output=True,
                                     text=True).stdout)


def versions(venv, cluster_env):
    found = interpreter_versions(venv / "bin" / "python")
    helm = subprocess.run(["helm", "version", "--template", "{{.Version}}"], env=cluster_env, check=True,
                          capture_output=True, text=True).stdout.strip()
    server = json.loads(subprocess.run(["kubectl", "version", "-o", "json"], env=cluster_env, check=True,
                                       capture_output=True, text=True).stdout)["serverVersion"]["gitVersion"]
    found.update(helm=helm, kubernetes=server, istio=_flavour_istio())
    return found


def _flavour_istio():
    """The Istio version of the matrix's flavour (its CRDs, the stand-in charts)."""
    return localcp.MATRIX[FLAVOUR]["istio"].removeprefix("istio-")


def _line(found, outcome, counts, source=""):
    label = "" if counts else " (report only)"
    return (f"matrix: ansible-core={found['ansible-core']} kubernetes.core={found['kubernetes.core']} "
            f"python={found['python']} helm={found['helm']} kubernetes={found['kubernetes']} "
            f"istio={found['istio']}: {outcome}{label}{source}")


def _record(results, name, found, passed):
    """Keep one combination's outcome in RESULTS (a JSON object by combination name), for `report`."""
    recorded = json.loads(results.read_text()) if results.exists() else {}
    recorded[name] = {"versions": found, "passed": passed}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(recorded, indent=1))


def run(args):
    """Each selected combination's pytest session on one cluster; prints its line and records it."""
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
    try:
        for name, (python, installs, counts) in COMBINATIONS.items():
            if (args.only and name not in args.only) or name == args.skip:
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
            log(f"{name}: virtualenv {prepared - start:.0f} s, tests {time.monotonic() - prepared:.0f} s")
            print(_line(found, "passed" if proc.returncode == 0 else "failed", counts), flush=True)
            _record(args.results, name, found, proc.returncode == 0)
    finally:
        subprocess.run(localcp_cmd + ["down"], env=env, check=False)
    return 0


def selection_outcome(junit_xml):
    """Whether every test of SELECTION ran and passed in a pytest session's JUnit XML (a lane of `make test`,
    which runs them among the others): each must be present (all of a parametrised test's cases), none failed,
    errored or skipped. Returns (passed, reason)."""
    cases = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/") + ".py"
        cases.setdefault((path, case.get("name", "").split("[")[0]), []).append(case)
    for test in SELECTION:
        path, name = test.split("::")
        name, bracket, param = name.partition("[")
        ran = [c for c in cases.get((path, name), []) if not bracket or c.get("name") == f"{name}[{param}"]
        if not ran:
            return False, f"{test} did not run"
        for case in ran:
            bad = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            if bad:
                return False, f"{case.get('name')}: {bad[0]}"
    return True, "every test of the selection passed"


def own_combination(found):
    """The combination of the ansible-core an environment has (2.19.14 -> "2.19")."""
    for name in COMBINATIONS:
        if found["ansible-core"] == name or found["ansible-core"].startswith(name + "."):
            return name
    raise SystemExit(f"matrix: ansible-core {found['ansible-core']} is none of the combinations {sorted(COMBINATIONS)}")


def lane_versions():
    """The versions a lane of `make test` (current flavour) ran with: this interpreter's (the project's .venv,
    which runs the lanes), and the flavour's pinned helm and Kubernetes (test_localcp.py asserts the server
    reports its pin)."""
    found = interpreter_versions(sys.executable)
    pins = localcp.versions()
    found.update(helm=pins["HELM_VERSION"], kubernetes=pins["KUBERNETES_VERSION"], istio=_flavour_istio())
    return found


def report(args):
    """Every recorded combination's line, in COMBINATIONS' order, then `matrix: P/T passed`."""
    recorded = json.loads(args.results.read_text()) if args.results.exists() else {}
    for path in args.junit or []:
        found = lane_versions()
        name = own_combination(found)
        passed, reason = selection_outcome(path)
        log(f"{name}: from {path}: {reason}")
        recorded[name] = {"versions": found, "passed": passed, "source": f" (in {Path(path).name})"}
    lines, passed, counted = [], 0, 0
    for name, combination in COMBINATIONS.items():
        counts = combination[2]
        if name not in recorded:
            continue
        entry = recorded[name]
        lines.append(_line(entry["versions"], "passed" if entry["passed"] else "failed", counts,
                           entry.get("source", "")))
        if counts:
            counted += 1
            passed += entry["passed"]
    missing = [name for name, combination in COMBINATIONS.items() if combination[2] and name not in recorded]
    for name in missing:
        lines.append(f"matrix: ansible-core={name}: not run")
    print("\n".join(lines))
    print(f"matrix: {passed}/{counted + len(missing)} passed")
    return 0 if passed == counted and not missing else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["run", "report"],
                        help="run: the selected combinations, recorded in --results; report: the recorded lines and "
                             "the count (exit 1 unless all counted passed); default: both")
    parser.add_argument("--only", nargs="*", choices=sorted(COMBINATIONS), help="run only these combinations")
    parser.add_argument("--results", type=Path, default=OUTPUT / "results.json",
                        help="where run records each combination and report reads them")
    parser.add_argument("--junit", action="append", metavar="JUNIT_XML",
                        help="report: the outcome of this interpreter's combination from the JUnit XML of a pytest "
                             "session that ran the selection with it, current flavour (a lane of make test)")
    parser.add_argument("--skip-own", action="store_true",
                        help="run: not the combination of this interpreter's ansible-core (a lane of make test runs "
                             "the selection with it: report --junit reads that lane's outcome)")
    args = parser.parse_args(argv)
    args.skip = own_combination(interpreter_versions(sys.executable)) if args.skip_own else None
    if args.command in (None, "run"):
        if args.command is None and args.results.exists():
            args.results.unlink()
        run(args)
    if args.command in (None, "report"):
        return report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
