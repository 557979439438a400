"""`make simulate`: the traffic proof without Envoy (docs/traffic-simulation.md).

    run.py build                 build the Go suite once per source and Go version into the build cache;
                                 print the binary's path
    run.py [--controllers real]  build, start a local control plane, run playbooks/site.yml on it in each
                                 routing mode, dump the cluster state, run the suite on those states,
                                 stop the cluster; the last line is `simulate: hops=P/T ablations=A/B`
    run.py --state-dir DIR       only run the suite on states dumped before (no cluster)

The state the suite reads comes from a real site.yml run, never from a hand-written fixture, so the
suite fails when the collection stops applying a step. With `--controllers real` (or CONTROLLERS=real)
the real Envoy Gateway controller and istiod run beside the cluster, and the suite also asks them over
xDS what they serve to the Envoy pod and to the sidecars, and checks that the offline walk agrees.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOCALCP_HERE = REPO / "tests" / "localcp"
sys.path.insert(0, str(LOCALCP_HERE))
import injector  # noqa: E402 -- the local control plane's stand-in injector, whose marks the dump takes off
SITE_VARS = LOCALCP_HERE / "site-vars.yml"
OUTPUT = REPO / "tests" / "output" / "simulate"
DOC = REPO / "docs" / "traffic-hops.md"
# The walks, each on the state site.yml leaves with these variables: the two routing modes of sidecar mode,
# then ambient mode (teg_istio_mesh_mode: ambient, where routing is always the Service's), run in this order on
# one cluster, so the last is also the supported switch from sidecar to ambient.
MODES = {
    "virtualservice": {"expose_app_routing": "virtualservice"},
    "service": {"expose_app_routing": "service"},
    "ambient": {"teg_istio_mesh_mode": "ambient", "expose_app_routing": "service"},
}
FIRST_MODE = next(iter(MODES))
TEG_NAMESPACE = "envoy-gateway-system"
ISTIO_NAMESPACE = "istio-system"
# What the suite reads; kinds the API server does not serve are skipped.
KINDS = [
    "namespaces", "services", "endpointslices.discovery.k8s.io", "pods", "deployments", "daemonsets.apps", "serviceaccounts",
    "gatewayclasses.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io", "envoyproxies.gateway.envoyproxy.io",
    "backendtrafficpolicies.gateway.envoyproxy.io", "clienttrafficpolicies.gateway.envoyproxy.io",
    "virtualservices.networking.istio.io", "destinationrules.networking.istio.io",
    "serviceentries.networking.istio.io", "sidecars.networking.istio.io",
    "peerauthentications.security.istio.io", "authorizationpolicies.security.istio.io",
]
ENVOY_SELECTOR = "app.kubernetes.io/managed-by=envoy-gateway,app.kubernetes.io/component=proxy"
# The real Envoy Gateway's fixed xDS port (docs/real-controllers.md).
EG_XDS = "127.0.0.1:18000"


def log(msg):
    print(f"[simulate] {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, **kwargs):
    return subprocess.run([str(c) for c in cmd], check=check, **kwargs)


def versions():
    out = {}
    for line in (LOCALCP_HERE / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


# --- build -------------------------------------------------------------------------------------

# -trimpath and CGO_ENABLED=0 as build.sh builds the controllers, so the build cache they filled serves
# the suite too. Istio's API module and go-control-plane's contrib module both register the proto
# istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig (Envoy Gateway pulls in the second); the suite
# uses neither, so the registry warns instead of panicking at start.
BUILD_FLAGS = ("-trimpath", "-ldflags", "-s -w -X google.golang.org/protobuf/reflect/protoregistry.conflictPolicy=warn")
# Binaries of other sources kept in the cache beside the current one (each is about 200 MB).
KEEP_OLD_BUILDS = 1


def source_digest():
    """What the binary is built from: the module files and every Go file, and the Go version."""
    digest = hashlib.sha256()
    for path in sorted([HERE / "go.mod", HERE / "go.sum", *HERE.glob("*.go")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join(BUILD_FLAGS).encode())
    digest.update(run(["go", "env", "GOVERSION"], capture_output=True, text=True).stdout.strip().encode())
    return digest.hexdigest()[:16]


def cache_dir():
    return Path(os.environ.get("TEG_ISTIO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "teg-istio")


def build():
    """The test binary, once per source digest (like build.sh's binaries, once per version)."""
    target = cache_dir() / "bin" / f"simulate-{source_digest()}" / "simulate.test"
    if target.exists():
        return target
    tmp = target.parent.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log(f"building the suite into {target.parent} (first time for these sources: see docs/traffic-simulation.md)")
    started = time.monotonic()
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    run(["go", "test", "-c", *BUILD_FLAGS, "-o", tmp / "simulate.test", "."], cwd=HERE, env=env)
    shutil.rmtree(target.parent, ignore_errors=True)
    tmp.rename(target.parent)
    log(f"built in {round(time.monotonic() - started)} s")
    older = sorted((d for d in target.parent.parent.glob("simulate-*") if d != target.parent and d.is_dir()),
                   key=lambda d: d.stat().st_mtime, reverse=True)
    for stale in older[KEEP_OLD_BUILDS:]:
        shutil.rmtree(stale, ignore_errors=True)
    return target


def build_ztunnelview():
    """The ztunnel-view command (ztunnelview/, istiod's workload API as ztunnel reads it), once per source
    digest into the same cache; small beside the suite (it links the workload API protos and gRPC only)."""
    digest = hashlib.sha256()
    for path in sorted([HERE / "go.mod", HERE / "go.sum", *(HERE / "ztunnelview").glob("*.go")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(run(["go", "env", "GOVERSION"], capture_output=True, text=True).stdout.strip().encode())
    target = cache_dir() / "bin" / f"ztunnelview-{digest.hexdigest()[:16]}" / "ztunnelview"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
        run(["go", "build", "-trimpath", "-o", target.with_suffix(".tmp"), "./ztunnelview"], cwd=HERE, env=env)
        target.with_suffix(".tmp").rename(target)
        for stale in target.parent.parent.glob("ztunnelview-*"):
            if stale != target.parent:
                shutil.rmtree(stale, ignore_errors=True)
    return target


# --- the cluster -------------------------------------------------------------------------------

class Cluster:
    def __init__(self, state_dir, controllers):
        self.state_dir = state_dir
        self.controllers = controllers
        self.env = dict(os.environ, LOCALCP_DIR=str(state_dir), CONTROLLERS=controllers)

    def localcp(self, *args):
        return run([sys.executable, LOCALCP_HERE / "localcp.py", *args], env=self.env, capture_output=True, text=True)

    def up(self):
        try:
            self.localcp("up", "--matrix", "current")
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"simulate: cluster-up failed: {exc.stderr.strip()[-2000:]}") from exc
        for line in self.localcp("env").stdout.splitlines():
            key, value = line.removeprefix("export ").split("=", 1)
            self.env[key] = value.replace("$PATH", os.environ["PATH"])
        self.env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
        self.env["K8S_AUTH_KUBECONFIG"] = str(self.state_dir / "kubeconfig")

    def down(self):
        self.localcp("down")

    def kubectl(self, *args, check=True):
        return run(["kubectl", *args], env=self.env, capture_output=True, text=True, check=check)

    def site(self, routing, extra_vars):
        cmd = [Path(sys.executable).parent / "ansible-playbook", REPO / "playbooks" / "site.yml", "-e", f"@{SITE_VARS}",
               "-e", json.dumps(dict(extra_vars, **MODES[routing]))]
        proc = run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, check=False)
        (OUTPUT / f"site-{routing}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise SystemExit(f"simulate: site.yml ({routing}) failed, see {OUTPUT / f'site-{routing}.log'}:\n"
                             + (proc.stdout + proc.stderr)[-3000:])

    def settle(self):
        """Every Deployment rolled out and no pod terminating, so the dump holds the pods that stay."""
        for namespace in (TEG_NAMESPACE, "httpbin"):
            self.kubectl("rollout", "status", "deployment", "-n", namespace, "--timeout=180s", check=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pods = json.loads(self.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
            if not any(p["metadata"].get("deletionTimestamp") for p in pods):
                return
            time.sleep(1)
        raise SystemExit("simulate: pods still terminating after 120 s")

    def wait_envoy_gateway(self):
        """The real Envoy Gateway reports on the Gateway and runs its Envoy Deployment."""
        self.kubectl("wait", "--for=condition=Programmed", "gateway", "--all", "-A", "--timeout=180s")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pods = json.loads(self.kubectl("get", "pods", "-n", TEG_NAMESPACE, "-l", ENVOY_SELECTOR, "-o",
                                           "json").stdout)["items"]
            if pods and all(p.get("status", {}).get("podIP") for p in pods):
                return
            time.sleep(1)
        raise SystemExit("simulate: the real Envoy Gateway started no Envoy pod in 180 s")

    @property
    def audit_log(self):
        return self.state_dir / "audit.log"

    def wait_reapply(self, position, service, timeout=120):
        """The API server's audit log shows Envoy Gateway (its own client certificate, CN=envoy-gateway)
        server-side-applying that Service after `position`: the reconcile whose effect the walk then sees."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.audit_log, "rb") as fh:
                fh.seek(position)
                for line in fh:
                    try:
                        event = json.loads(line)
                    except ValueError:  # a line still being written
                        continue
                    ref = event.get("objectRef") or {}
                    if (event.get("verb") == "patch" and ref.get("resource") == "services" and ref.get("name") == service
                            and event["user"].get("username") == "envoy-gateway"
                            and "fieldManager=envoy-gateway" in event.get("requestURI", "")):
                        log(f"Envoy Gateway re-applied Service {service} at {event.get('stageTimestamp')} "
                            f"({event['requestURI'].split('?', 1)[-1]})")
                        return
            time.sleep(1)
        raise SystemExit(f"simulate: no server-side apply of Service {service} by Envoy Gateway after its restart")

    def objects(self):
        out = []
        for kind in KINDS:
            proc = self.kubectl("get", kind, "-A", "-o", "json", check=False)
            if proc.returncode != 0:  # not served by this flavour
                continue
            for item in json.loads(proc.stdout)["items"]:
                meta = item["metadata"]
                meta.pop("managedFields", None)
                (meta.get("annotations") or {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
                if item["kind"] == "Pod" and self.controllers != "real":
                    # The local control plane's stand-in injector only marks pods as injected; the suite injects
                    # them with the real istiod chart's template (docs/traffic-simulation.md).
                    injector.undo(item)
                out.append(item)
        return out


# --- what the suite needs besides the objects --------------------------------------------------

def istio_chart(cluster_state, version_pins):
    """The real istiod chart of the pinned module, rendered as controllers.py renders it for the real
    istiod: the injection template and values, the mesh configuration and the injector webhook."""
    sys.path.insert(0, str(LOCALCP_HERE))
    import controllers  # noqa: PLC0415 -- reads LOCALCP_DIR at import, set by the caller's environment
    module_dir = controllers.istio_module_dir(version_pins["ISTIOD_MODULE_VERSION"])
    (injector,) = controllers.render_istiod_chart(cluster_state, module_dir, version_pins,
                                                  "istiod-injector-configmap.yaml")
    (mesh,) = [d for d in controllers.render_istiod_chart(cluster_state, module_dir, version_pins, "configmap.yaml")
               if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "istio"]
    (webhook,) = controllers.render_istiod_chart(cluster_state, module_dir, version_pins, "mutatingwebhook.yaml")
    return {"injector_config": injector["data"]["config"], "injector_values": injector["data"]["values"],
            "mesh": mesh["data"]["mesh"], "webhook": webhook,
            "module_version": version_pins["ISTIOD_MODULE_VERSION"],
            "compatibility_version": version_pins["ISTIOD_COMPATIBILITY_VERSION"]}


def live_endpoints(cluster):
    """Where the real controllers serve xDS, and the client certificate Envoy Gateway's certgen wrote
    for its Envoy pods (Secret `envoy`)."""
    sys.path.insert(0, str(LOCALCP_HERE))
    import controllers  # noqa: PLC0415
    state = controllers.load_state()
    secret = json.loads(cluster.kubectl("get", "secret", "envoy", "-n", TEG_NAMESPACE, "-o", "json").stdout)
    return {"istiod_grpc": f"127.0.0.1:{state['ports']['istiod']['grpc']}", "envoy_gateway_xds": EG_XDS,
            "envoy_client_tls": secret["data"]}


def dump(cluster, routing, version_pins, chart):
    from controllers import envoy_gateway_config  # noqa: PLC0415 -- imported once LOCALCP_DIR is set
    state = {
        "routing": routing,
        "mesh_mode": MODES[routing].get("teg_istio_mesh_mode", "sidecar"),
        "controllers": cluster.controllers,
        "versions": {k: version_pins[k] for k in ("ENVOY_GATEWAY_VERSION", "ISTIOD_MODULE_VERSION")},
        # The EnvoyGateway configuration TEG's control plane runs with (the real controller gets the same).
        "envoy_gateway": envoy_gateway_config(),
        "istio_chart": chart,
        "objects": cluster.objects(),
    }
    if cluster.controllers == "real":
        state["live"] = live_endpoints(cluster)
    path = OUTPUT / f"state-{routing}.yaml"
    path.write_text(yaml.safe_dump(state, sort_keys=False))
    log(f"dumped {len(state['objects'])} objects to {path.relative_to(REPO)}")
    return path


# --- running the suite -------------------------------------------------------------------------

# The in-process istiod runs with ambient enabled, as the real one of CONTROLLERS=real does
# (tests/localcp/controllers.py): Istio reads PILOT_ENABLE_AMBIENT once, at start, so it is set for the process.
SUITE_ENV = dict(os.environ, PILOT_ENABLE_AMBIENT="true")


def suite(binary, state_dir, live, update_docs):
    args = [binary, "-test.v", "-test.count=1", f"-state-dir={Path(state_dir).resolve()}", f"-hop-table={DOC}"]
    if live:
        args.append("-live")
    if update_docs:
        args.append("-update-hop-table")
    log("running " + " ".join(str(a) for a in args))
    proc = subprocess.run([str(a) for a in args], cwd=HERE, env=SUITE_ENV, capture_output=True, text=True, check=False)
    (OUTPUT / "suite.log").write_text(proc.stdout + proc.stderr)
    summary = [line for line in proc.stdout.splitlines() if line.startswith("simulate: ")]
    sys.stdout.write("".join(line + "\n" for line in proc.stdout.splitlines()
                             if line.startswith(("--- FAIL", "    ", "FAIL", "ok ", "PASS")) or "FAIL:" in line))
    # The proto registry's conflict warnings (see BUILD_FLAGS) are left in suite.log only.
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("panic", "fatal", "FAIL"))]
    sys.stderr.write("".join(line + "\n" for line in errors))
    return proc.returncode, summary[-1] if summary else "simulate: the suite printed no summary"


def walk_cluster(binary, controllers, extra_vars):
    """A fresh local control plane: site.yml in each routing mode, the state dumped after each (and, with
    the real controllers, what they serve), then the cluster stopped."""
    cluster = Cluster(OUTPUT / f"localcp-{controllers}", controllers)
    os.environ["LOCALCP_DIR"] = str(cluster.state_dir)
    sys.path.insert(0, str(LOCALCP_HERE))
    version_pins = versions()
    log(f"starting a local control plane ({controllers} controllers) in {cluster.state_dir}")
    cluster.up()
    try:
        import localcp  # noqa: PLC0415 -- reads LOCALCP_DIR at import
        chart = istio_chart(localcp.load_state(), version_pins)
        for routing in MODES:
            log(f"site.yml with {json.dumps(MODES[routing])}")
            cluster.site(routing, extra_vars)
            cluster.settle()
            # The ambient walk reads the in-process istiod only: what the running one serves ztunnel is
            # tests/integration_real/test_ambient.py's judge.
            live = controllers == "real" and MODES[routing].get("teg_istio_mesh_mode") != "ambient"
            if live:
                live_setup(cluster, first=routing == FIRST_MODE)
            path = dump(cluster, routing, version_pins, chart)
            if live:
                capture_live(binary, path, OUTPUT / f"live-{routing}.json")
    finally:
        cluster.down()


def live_setup(cluster, first):
    """With the real controllers: a user's global rate limit (so that Envoy Gateway serves the rate limit
    cluster of hop 4b), and, the first time, Envoy Gateway restarted: at start it server-side-applies the
    envoy-ratelimit Service and Deployment it owns, so the state then shows whether teg_istio_prep's
    appProtocol on port 8081 survives that reconcile."""
    cluster.kubectl("apply", "-f", str(HERE / "ratelimit-policy.yaml"))
    if first:
        import controllers  # noqa: PLC0415
        log("restarting the real controllers (Envoy Gateway re-applies the objects it owns)")
        position = cluster.audit_log.stat().st_size
        for command in ("down", "up"):
            if controllers.main([command]) != 0:
                raise SystemExit(f"simulate: controllers.py {command} failed")
        cluster.wait_reapply(position, "envoy-ratelimit")
    cluster.wait_envoy_gateway()


def capture_live(binary, state_path, out):
    """What the running controllers serve now, for this routing mode."""
    proc = subprocess.run([str(binary), "-test.run=^TestCaptureLive$", "-test.count=1", f"-state={state_path}",
                           f"-live-out={out}"], cwd=HERE, env=SUITE_ENV, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("simulate: capturing what the real controllers serve failed:\n" + proc.stdout[-4000:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=("run", "build"))
    parser.add_argument("--controllers", default=os.environ.get("CONTROLLERS", "stand-in"),
                        choices=("stand-in", "real"))
    parser.add_argument("--state-dir", type=Path, help="run the suite on states dumped before, start no cluster")
    parser.add_argument("--site-extra-vars", default="{}",
                        help="more variables for site.yml, as JSON: to see what the walk says when a step is left out")
    parser.add_argument("--update-docs", action="store_true", default=bool(os.environ.get("UPDATE")),
                        help=f"rewrite {DOC.relative_to(REPO)} from this run instead of checking it")
    args = parser.parse_args(argv)

    binary = build()
    if args.command == "build":
        print(binary)
        return 0
    OUTPUT.mkdir(parents=True, exist_ok=True)
    state_dir = args.state_dir
    live = state_dir is not None and (state_dir / f"live-{FIRST_MODE}.json").exists()
    if state_dir is None:
        state_dir = OUTPUT
        live = args.controllers == "real"
        walk_cluster(binary, args.controllers, json.loads(args.site_extra_vars))
    code, summary = suite(binary, state_dir, live, args.update_docs)
    print(summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
