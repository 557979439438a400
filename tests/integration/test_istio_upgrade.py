"""An in-place Istio upgrade through site.yml, on the local control plane (flavour from $MATRIX).

The charts are the test stand-ins of tests/charts staged by tests/charts/prepare.py at two versions:
the flavour's Istio version A and the next minor version B (`--also-version`: the same charts, the
base chart with A's real CRDs). site.yml runs at A, then at B. The audit log witnesses what each run
wrote: helm upgrades the release istio-base before istiod (the order Istio's Helm upgrade guide
gives), and teg_restart restarts each TEG Deployment once, because the trigger holds istiod's version
(the injector's identity); check mode reports all of it and writes nothing; a rerun at B writes
nothing. A move of more than one minor version is refused in one line before any write. Last, an upgrade to the
minor version after B (C) cut off by the API server's death between istio-base and istiod is finished by a rerun.

The tests run in file order and share one cluster, reset at the start and at the end of the module."""

import json
import subprocess
import sys

import pytest

import faults
from conftest import JSON_CALLBACK, REPO, PlaybookRun, assert_one_line_failure, playbook_command, task_results

ISTIO_NS = "istio-system"
TEG_NS = "envoy-gateway-system"
CONTROL_PLANE = ["envoy-gateway", "envoy-ratelimit", "teg-envoy-gateway", "teg-redis"]
TRIGGER = "teg.istio/restart-trigger"
RELEASE_SECRET = "sh.helm.release.v1."


def _next_minor(version):
    major, minor = version.split(".")[:2]
    return "%s.%d.0" % (major, int(minor) + 1)


@pytest.fixture(scope="module")
def versions(cluster):
    a = cluster.env["TEG_ISTIO_TEST_ISTIO_VERSION"]
    return {"A": a, "B": _next_minor(a), "C": _next_minor(_next_minor(a))}


@pytest.fixture(scope="module")
def charts(cluster, versions):
    """Both versions' archives in one local chart directory, in the cluster's state directory."""
    out = cluster.state_dir / "upgrade-charts"
    subprocess.run([sys.executable, str(REPO / "tests" / "charts" / "prepare.py"), str(out), "--matrix", cluster.matrix,
                    "--also-version", versions["B"], "--also-version", versions["C"]], check=True, env=cluster.env,
                   capture_output=True, text=True)
    return str(out / "archives")


@pytest.fixture(scope="module")
def site(cluster, play, charts):
    """site.yml at an Istio version, from the two-version chart directory."""
    cluster.localcp("reset")

    def run(version, **kwargs):
        return play("site.yml", extra_vars={"istio_install_chart_path": charts, "istio_install_version": version},
                    **kwargs)
    yield run
    cluster.localcp("reset")


def _json(cluster, *args):
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _releases(cluster):
    """{release: (chart, revision)} of the releases in Istio's namespace, as `helm list` reports them."""
    found = json.loads(subprocess.run(["helm", "list", "-n", ISTIO_NS, "-o", "json"], env=cluster.env, check=True,
                                      capture_output=True, text=True).stdout)
    return {r["name"]: (r["chart"], int(r["revision"])) for r in found}


def _triggers(cluster):
    return {name: _json(cluster, "-n", TEG_NS, "get", "deployment", name)["spec"]["template"]["metadata"]
            .get("annotations", {}).get(TRIGGER) for name in CONTROL_PLANE}


RESTART_TASK = "Restart the TEG control plane and the Envoy data plane whose injection settings changed"

BEFORE = {}


def test_site_at_version_a(cluster, site, versions):
    run = site(versions["A"])
    assert run.rc == 0, run.output[-4000:]
    BEFORE["triggers"] = _triggers(cluster)
    BEFORE["releases"] = _releases(cluster)
    assert {n: chart for n, (chart, _revision) in BEFORE["releases"].items()} == {
        "istio-base": "base-" + versions["A"], "istiod": "istiod-" + versions["A"]}
    assert all(BEFORE["triggers"].values()), BEFORE


def test_check_mode_of_the_upgrade_reports_both_releases_and_the_restart_and_writes_nothing(cluster, site, versions):
    run = site(versions["B"], check=True, env=JSON_CALLBACK)
    assert run.rc == 0, run.output[-4000:]
    assert run.writes == [], run.describe_writes()
    (note,) = [r["msg"] for r in task_results(run, "Say what check mode would do") if not r.get("skipped")]
    assert note.startswith("check mode: would install or upgrade istio-base and istiod with charts %s from the local "
                           "chart directory" % versions["B"]), note
    (restart,) = task_results(run, RESTART_TASK)
    assert restart["changed"] is True
    assert sorted(r["name"] for r in restart["restarted"]) == sorted(CONTROL_PLANE)
    assert {r["reason"] for r in restart["restarted"]} == {"trigger changed"}
    assert _releases(cluster) == BEFORE["releases"] and _triggers(cluster) == BEFORE["triggers"]


def test_the_upgrade_moves_base_then_istiod_and_restarts_teg_once(cluster, site, versions):
    run = site(versions["B"])
    assert run.rc == 0, run.output[-4000:]
    # helm records each release it writes as a new Secret sh.helm.release.v1.<release>.v<n>: base's first.
    created = [e["objectRef"]["name"] for e in run.writes if e["verb"] == "create"
               and e["objectRef"]["resource"] == "secrets" and e["objectRef"].get("namespace") == ISTIO_NS]
    releases = _releases(cluster)
    assert releases == {"istio-base": ("base-" + versions["B"], BEFORE["releases"]["istio-base"][1] + 1),
                        "istiod": ("istiod-" + versions["B"], BEFORE["releases"]["istiod"][1] + 1)}
    assert created == [RELEASE_SECRET + "istio-base.v%d" % releases["istio-base"][1],
                       RELEASE_SECRET + "istiod.v%d" % releases["istiod"][1]], created
    istiod = _json(cluster, "-n", ISTIO_NS, "get", "deployment", "istiod")
    assert istiod["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/istio/pilot:" + versions["B"]
    # Each TEG Deployment restarted once: one write each, a new trigger.
    patched = [e["objectRef"]["name"] for e in run.writes if e["objectRef"]["resource"] == "deployments"
               and e["objectRef"].get("namespace") == TEG_NS]
    assert sorted(patched) == sorted(CONTROL_PLANE), patched
    after = _triggers(cluster)
    assert all(after[n] and after[n] != BEFORE["triggers"][n] for n in CONTROL_PLANE), (BEFORE, after)
    assert len(set(after.values())) == 1
    assert "Istio %s: Deployment istio-system/istiod (revision default) available" % versions["B"] in run.stdout


def test_a_rerun_at_the_new_version_writes_nothing(site, versions):
    run = site(versions["B"])
    assert run.rc == 0, run.output[-4000:]
    assert run.recap()["changed"] == 0
    assert run.writes == [], run.describe_writes()


@pytest.mark.parametrize("minors, verb", [(2, "upgrade"), (-2, "downgrade")])
def test_a_move_of_more_than_one_minor_version_is_refused_before_any_write(site, versions, minors, verb):
    major, minor = versions["B"].split(".")[:2]
    target = "%s.%d.0" % (major, int(minor) + minors)
    run = site(target, env=JSON_CALLBACK)
    step = "%s.%d" % (major, int(minor) + (1 if minors > 0 else -1))
    assert_one_line_failure(
        run, cause=["Helm release istiod in istio-system is Istio %s" % versions["B"],
                    "istio_install_version %s would %s it in place by more than one minor version" % (target, verb)],
        fix=["set istio_install_version to a %s release and run, then %s" % (step, target)])
    assert run.writes == [] and run.dry_runs == [], run.describe_writes()


def test_an_upgrade_cut_off_between_base_and_istiod_is_finished_by_a_rerun(cluster, site, charts, versions):
    """B to C with the API server killed at helm's first write for istiod (its new release record; faults.WriteGate),
    after istio-base was upgraded: the run fails in one line, istio-base is at C, istiod still at B and no TEG
    Deployment restarted; a rerun upgrades istiod alone (one more revision, base untouched), restarts each TEG
    Deployment once, and one more rerun writes nothing."""
    before = {"triggers": _triggers(cluster), "releases": _releases(cluster)}
    istiod_record = "CREATE secrets %s/%sistiod.v%d" % (ISTIO_NS, RELEASE_SECRET, before["releases"]["istiod"][1] + 1)
    cmd = playbook_command("site.yml", {"istio_install_chart_path": charts, "istio_install_version": versions["C"]})
    rc, stdout, stderr, cut_at, admitted = faults.cut_off(
        cluster, cmd, dict(cluster.env, **JSON_CALLBACK), REPO,
        lambda request, admitted: faults.describe(request) == istiod_record)
    assert cut_at == istiod_record, (cut_at, admitted)
    assert_one_line_failure(PlaybookRun(rc, stdout, stderr, []), cause=["cannot reach the Kubernetes API server"],
                            fix=["that the API server is running"])
    partial = _releases(cluster)
    assert partial == {"istio-base": ("base-" + versions["C"], before["releases"]["istio-base"][1] + 1),
                       "istiod": before["releases"]["istiod"]}, partial
    assert _triggers(cluster) == before["triggers"]

    run = site(versions["C"])
    assert run.rc == 0, run.output[-4000:]
    assert _releases(cluster) == {"istio-base": partial["istio-base"],
                                  "istiod": ("istiod-" + versions["C"], before["releases"]["istiod"][1] + 1)}
    patched = [e["objectRef"]["name"] for e in run.writes if e["objectRef"]["resource"] == "deployments"
               and e["objectRef"].get("namespace") == TEG_NS]
    assert sorted(patched) == sorted(CONTROL_PLANE), patched
    after = _triggers(cluster)
    assert all(after[n] and after[n] != before["triggers"][n] for n in CONTROL_PLANE), (before, after)
    again = site(versions["C"])
    assert again.rc == 0 and again.writes == [], again.describe_writes()
