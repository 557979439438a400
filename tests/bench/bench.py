"""`make bench`: how long the collection takes, against the manual procedure, on the local cluster.

    bench.py [--matrix current|legacy] [--runs 3]

(a) the TEG how-to as plain kubectl/helm commands (manual.sh), on a fresh cluster state
(a3) the same with Helm 3 (the legacy lane's helm), the manual procedure as it was timed when the current lane ran
    Helm 3 (until 2026-12-05: the targets of that time were measured against it); Helm 4's --wait returns as soon as
    the objects are ready, Helm 3's polls every 2 s, so a3 is the slower of the two
(b) playbooks/site.yml on a fresh cluster state
(c) site.yml again, with nothing to do
(d) the expose_app role alone with 1, 10 and 100 apps (each run under its own Gateway, so runs do
    not prune each other)
(e) site.yml on three fresh clusters in one run (README.md, "Many clusters"): the bench's cluster and two more
    of the same flavour, each its own state directory, the hosts of one inventory; fleet3/1 = e/b, what the
    two more clusters cost against one cluster alone

Medians of --runs runs each (5 by default), the runs of a, b, c and d alternating, so that the machine's
load at any moment weighs on all of them alike; with each ansible-playbook run the peak resident set
size of its process tree (wait4's ru_maxrss), the CPU seconds it used (user + system, workers, module and helm
processes included) and those the local control planes' processes used meanwhile. The results and the
machine's description go to docs/bench-results.md; the last line is
`bench: b/a=<x> c/a=<y> d100/d1=<z> fleet3/1=<w> b/a3=<u> c/a3=<v>`. Nothing here is asserted: timings are facts to
read, not tests.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "localcp"))
import localcp  # noqa: E402  (bin_dirs: where build.sh put the legacy lane's Helm 3)
LOCALCP = [sys.executable, str(REPO / "tests" / "localcp" / "localcp.py")]
PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
SITE_VARS = "@" + str(REPO / "tests" / "localcp" / "site-vars.yml")
APP_COUNTS = (1, 10, 100)
FLEET_GROUP = "bench_fleet"


def cluster_env(state_dir):
    env = dict(os.environ, LOCALCP_DIR=str(state_dir), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    out = subprocess.run([*LOCALCP, "env"], env=env, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        env[key] = value.replace("$PATH", os.environ["PATH"])
    env["K8S_AUTH_KUBECONFIG"] = env["KUBECONFIG"]
    return env


PEAK_RSS = {}
CPU = {}
CLUSTER_CPU = {}


def cluster_cpu(state_dirs):
    """CPU seconds (user + system) the local control planes of `state_dirs` have used so far: their etcd, API server,
    controller manager, scheduler, kwok and injector processes (the pids in each state.json)."""
    ticks = 0
    for state_dir in state_dirs:
        for pid in json.loads((Path(state_dir) / "state.json").read_text())["pids"].values():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def timed(cmd, env, label, key=None, clusters=()):
    """Seconds the command took; with `key`, its peak RSS (MiB) is added to PEAK_RSS[key], its CPU seconds to CPU[key],
    and the CPU seconds the control planes of `clusters` (state directories) used meanwhile to CLUSTER_CPU[key]."""
    before = cluster_cpu(clusters)
    start = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - start
        returncode = os.waitstatus_to_exitcode(status)
        if returncode != 0:
            out.seek(0)
            sys.stderr.write(out.read()[-8000:].decode(errors="replace"))
            raise SystemExit(f"bench: {label} failed (rc {returncode})")
    if key:
        # ru_maxrss is in KiB on Linux: the largest process of the tree ansible-playbook waited for.
        PEAK_RSS.setdefault(key, []).append(usage.ru_maxrss / 1024)
        CPU.setdefault(key, []).append(usage.ru_utime + usage.ru_stime)
        CLUSTER_CPU.setdefault(key, []).append(cluster_cpu(clusters) - before)
    return elapsed


def apps_playbook(tmp, count, run):
    gateway = f"bench-{count}-{run}"
    apps = [{"name": f"{gateway}-app-{i}", "namespace": "httpbin", "service": "httpbin", "port": 8000,
             "hostnames": [f"app-{i}.{gateway}.example.com"], "path_prefix": "/httpbin"} for i in range(count)]
    path = Path(tmp) / f"{gateway}.json"
    path.write_text(json.dumps({"expose_app_apps": apps, "expose_app_gateway_name": gateway,
                                "expose_app_sample": False}))
    return "@" + str(path)


def with_helm3(env):
    """`env` with the legacy lane's Helm 3 first on PATH (localcp.bin_dirs builds it when missing)."""
    helm3 = next(d for d in localcp.bin_dirs("legacy") if d.name.startswith("helm-v3."))
    return dict(env, PATH=os.pathsep.join([str(helm3), env["PATH"]]))


def fleet_inventory(tmp, state_dirs):
    """An inventory with one host per cluster (teg_istio_kubeconfig only), in the group FLEET_GROUP."""
    hosts = {f"cluster-{i + 1}": {"teg_istio_kubeconfig": str(Path(d) / "kubeconfig")} for i, d in enumerate(state_dirs)}
    path = Path(tmp) / "fleet.json"
    path.write_text(json.dumps({"all": {"children": {FLEET_GROUP: {
        "hosts": hosts, "vars": {"ansible_python_interpreter": sys.executable}}}}}))
    return str(path)


def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--matrix", default=os.environ.get("MATRIX", "current"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    # The bench's cluster first: a, b, c and d run on it; e on it and the two others.
    state_dirs = [Path(tempfile.mkdtemp(prefix=f"teg-istio-bench-{n}-")) for n in range(3)]
    state_dir = state_dirs[0]
    ups = [subprocess.Popen([*LOCALCP, "up", "--matrix", args.matrix], env=dict(os.environ, LOCALCP_DIR=str(d)))
           for d in state_dirs]
    if any(up.wait() != 0 for up in ups):
        for d in state_dirs:
            subprocess.run([*LOCALCP, "down"], env=dict(os.environ, LOCALCP_DIR=str(d)), check=False)
        raise SystemExit("bench: cluster-up failed")
    times = {"a": [], "a3": [], "b": [], "c": [], **{f"d{n}": [] for n in APP_COUNTS}, "e": []}
    try:
        env = cluster_env(state_dir)
        env["MATRIX"] = args.matrix
        others = [dict(env, LOCALCP_DIR=str(d)) for d in state_dirs[1:]]
        env_helm3 = with_helm3(env)
        site = [PLAYBOOK, "playbooks/site.yml", "-e", SITE_VARS]
        with tempfile.TemporaryDirectory() as tmp:
            fleet_site = site + ["-i", fleet_inventory(tmp, state_dirs), "-e", f"teg_istio_clusters={FLEET_GROUP}"]
            for run in range(args.runs):
                subprocess.run([*LOCALCP, "reset"], env=env, check=True, capture_output=True)
                times["a"].append(timed(["bash", "tests/bench/manual.sh"], env, "manual.sh", "a", [state_dir]))
                subprocess.run([*LOCALCP, "reset"], env=env, check=True, capture_output=True)
                times["a3"].append(timed(["bash", "tests/bench/manual.sh"], env_helm3, "manual.sh with Helm 3",
                                         "a3", [state_dir]))
                subprocess.run([*LOCALCP, "reset"], env=env, check=True, capture_output=True)
                times["b"].append(timed(site, env, "site.yml (fresh)", "b", [state_dir]))
                times["c"].append(timed(site, env, "site.yml (nothing to do)", "c", [state_dir]))
                for count in APP_COUNTS:
                    cmd = [PLAYBOOK, "tests/integration/playbooks/expose_app.yml", "-e", SITE_VARS,
                           "-e", apps_playbook(tmp, count, run)]
                    times[f"d{count}"].append(timed(cmd, env, f"expose_app with {count} apps", f"d{count}", [state_dir]))
                for each in [env, *others]:
                    subprocess.run([*LOCALCP, "reset"], env=each, check=True, capture_output=True)
                times["e"].append(timed(fleet_site, env, "site.yml on three clusters (fresh)", "e", state_dirs))
                print(f"run {run + 1}: " + ", ".join(f"{k}={v[-1]:.1f}s" for k, v in times.items()), flush=True)
    finally:
        for d in state_dirs:
            subprocess.run([*LOCALCP, "down"], env=dict(os.environ, LOCALCP_DIR=str(d)), check=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {"b/a": med["b"] / med["a"], "c/a": med["c"] / med["a"], "d100/d1": med["d100"] / med["d1"],
              "fleet3/1": med["e"] / med["b"], "b/a3": med["b"] / med["a3"], "c/a3": med["c"] / med["a3"]}
    write_results(args, med, ratios, times)
    print("peak RSS of ansible-playbook (MiB, max over the runs): "
          + ", ".join(f"{k}={max(v):.0f}" for k, v in PEAK_RSS.items()))
    print(f"bench: {bench_line(ratios)}")


def bench_line(ratios):
    return " ".join(f"{k}={v:.2f}" for k, v in ratios.items())


def write_results(args, med, ratios, times):
    labels = {"a": "manual procedure (kubectl + helm, manual.sh)",
              "a3": "the same with Helm 3 (the manual procedure of the 2026-12-04 targets)",
              "b": "site.yml on a fresh cluster",
              "c": "site.yml again, nothing to do", "d1": "expose_app, 1 app", "d10": "expose_app, 10 apps",
              "d100": "expose_app, 100 apps", "e": "site.yml on three fresh clusters in one run (an inventory)"}
    cpu = {k: statistics.median(CPU[k]) for k in CPU}
    control_plane = {k: statistics.median(CLUSTER_CPU[k]) for k in CLUSTER_CPU}
    rows = "\n".join(f"| {k} | {labels[k]} | {med[k]:.1f} | {' / '.join(f'{t:.1f}' for t in times[k])} | "
                     f"{cpu[k]:.1f} | {control_plane[k]:.1f} | {max(PEAK_RSS[k]):.0f} |" for k in labels)
    cores = os.cpu_count()
    # No run can take less time than all the CPU it needs spread over every core.
    e_floor = (cpu["e"] + control_plane["e"]) / cores
    text = f"""# Benchmark results

Written by `make bench` (tests/bench/bench.py) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, flavour
`{args.matrix}`, {args.runs} runs each, on the local control plane. Machine: {machine()}.

| | what | median (s) | runs (s) | CPU of the run (s, median) | CPU of the control plane(s) meanwhile (s, median) | peak RSS (MiB) |
|---|---|---|---|---|---|---|
{rows}

Ratios: b/a = {ratios['b/a']:.2f}, c/a = {ratios['c/a']:.2f}, d100/d1 = {ratios['d100/d1']:.2f}, fleet3/1 = e/b =
{ratios['fleet3/1']:.2f} (three clusters in one run against one); those of 2026-12-04 were 1.51, 0.28, 1.91 and 1.48.
Those b/a and c/a were measured against the manual procedure with Helm 3; against it in this run (a3): b/a3 =
{ratios['b/a3']:.2f}, c/a3 = {ratios['c/a3']:.2f}.

"CPU of the run" is the process tree of the command (ansible-playbook with its workers, module and helm processes; for
a and a3 bash with its kubectl and helm processes); "of the control plane" is what the local control planes' processes
(etcd, API server, controller manager, scheduler, kwok, injector) used while it ran: the bench's one for a to d, all
three for e. No run takes less than all that CPU spread over the {cores} cores: e at least
({cpu['e']:.1f} + {control_plane['e']:.1f}) / {cores} = {e_floor:.1f} s, so fleet3/1 cannot be below
{e_floor:.1f} / {med['b']:.1f} = {e_floor / med['b']:.2f} in this run, however the clusters' runs overlap. The peak RSS
is the largest process of the run's tree, the maximum over the runs.

`bench: {bench_line(ratios)}`
"""
    (REPO / "docs" / "bench-results.md").write_text(text)


if __name__ == "__main__":
    main()
