"""The opt-in real controllers of the local control plane (CONTROLLERS=real, docs/real-controllers.md).

    controllers.py up       start istiod and the Envoy Gateway controller against $LOCALCP_DIR's cluster
    controllers.py down     stop them (by PID) and remove their webhook
    controllers.py status   one line per process

`localcp.py up --controllers real` (or CONTROLLERS=real in the environment) calls `up` after the
cluster is up, and `localcp.py down` calls `down`. Both controllers run as local processes, out of
cluster, with the admin kubeconfig; kwok runs the pods they create.

- istiod (`pilot-discovery`): its serving certificate and its mesh CA come from a CA of our own, with
  IP SAN 127.0.0.1, so that the API server can call its injection webhook on https://127.0.0.1:<port>.
  The injection template and the MutatingWebhookConfiguration are rendered from the real istiod chart
  of the same module (manifests/charts/istio-control/istio-discovery); the webhook is registered under
  its own name with `clientConfig.url` instead of the in-cluster Service. This is test wiring: the
  istio_install role, and the stand-in chart it installs, are unchanged.
- Envoy Gateway (`envoy-gateway server`): its own `certgen` writes the control-plane Secrets into the
  TEG namespace, as the Helm chart's certgen Job does. The Kubernetes provider reads its xDS
  certificates from the fixed path /certs, so the process runs in a private mount namespace where
  the `envoy-gateway` Secret's files are bind-mounted on /certs (needs root, which CI has).
- A stand-in for a cloud load-balancer controller gives every Service of type LoadBalancer an
  address from 192.0.2.0/24 (TEST-NET-1, never routed), so Envoy Gateway can report the Gateway
  Programmed; nothing answers on those addresses.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import localcp  # noqa: E402 -- the launcher of the cluster these controllers run against

STATE_DIR = localcp.STATE_DIR / "controllers"
STATE_FILE = STATE_DIR / "state.json"
TEG_NAMESPACE = "envoy-gateway-system"
ISTIO_NAMESPACE = "istio-system"
CONTROLLER_NAME = "gateway.envoyproxy.io/gatewayclass-controller"
# Labelled so that `localcp.py reset` leaves it alone and no istiod revision's cert patcher touches it.
WEBHOOK_NAME = "teg-istio-real-sidecar-injector"
WEBHOOK_LABEL = "teg-istio.test/real-controllers"
PROCESSES = ("pilot-discovery", "envoy-gateway", "lb-addresses")
# The revision the real istiod serves: "" (the default revision) unless TEG_ISTIO_REAL_REVISION names one, as an
# owners' canary or revisioned install runs it (tests/integration_real/test_existing_revision.py). Its webhook then
# selects `istio.io/rev=<revision>` only, and the pods it injects carry that revision.
REVISION = os.environ.get("TEG_ISTIO_REAL_REVISION", "")
LB_PREFIX = "192.0.2."


def log(msg):
    print(f"[controllers] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kwargs):
    return localcp.run([str(c) for c in cmd], **kwargs)


def kubectl(cluster, *args, **kwargs):
    return localcp.kubectl(cluster, *args, **kwargs)


def binaries(matrix):
    """The two controllers' directories; build.sh builds them once per version (long on a cold cache)."""
    build = HERE / "build.sh"
    if matrix != "current":
        raise localcp.LocalcpError("CONTROLLERS=real exists for the current flavour only: the Go module proxy serves "
                                   "no Envoy Gateway v0.5.0 and no known Istio 1.19 snapshot (docs/real-controllers.md)")
    dirs = [Path(p) for p in run([build, "--print-controllers"]).stdout.split()]
    if not ((dirs[0] / "envoy-gateway").exists() and (dirs[1] / "pilot-discovery").exists()):
        log("building envoy-gateway and pilot-discovery (first time for these versions: see docs/real-controllers.md)")
        proc = subprocess.run([str(build), "--controllers"], stdout=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise localcp.LocalcpError("building the real controllers failed; see the output of build.sh above")
    return {"envoy-gateway": dirs[0] / "envoy-gateway", "pilot-discovery": dirs[1] / "pilot-discovery"}


def istio_module_dir(version):
    """Where the Go module cache holds the istiod module the binary was built from (its charts)."""
    proc = run(["go", "mod", "download", "-json", f"istio.io/istio@{version}"], env=dict(os.environ, GOFLAGS="-mod=mod"))
    return Path(json.loads(proc.stdout)["Dir"])


# --- state -----------------------------------------------------------------------------------

def load_state():
    return json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else None


def save_state(state):
    STATE_FILE.write_text(json.dumps(state, indent=2))


def _is_ours(pid, name):
    """The PID still runs what we started: the binary, or this script for the address loop."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if name == "lb-addresses":
        return any(a.endswith(b"controllers.py") for a in argv) and b"lb-addresses" in argv
    return os.path.basename(argv[0].decode()) == name


def client_kubeconfig(cluster, user):
    """A kubeconfig of its own for each controller (cluster-admin, like their Helm RBAC in effect), so
    the audit log tells their writes from the playbook's."""
    pki = Path(cluster["dir"]) / "pki"
    if not (pki / f"{user}.crt").exists():
        localcp._openssl_cert(pki, user, f"/O=system:masters/CN={user}",
                              "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
    path = STATE_DIR / f"{user}.kubeconfig"
    localcp.write_kubeconfig(path, f"https://127.0.0.1:{cluster['ports']['apiserver']}", pki, user)
    return path


def start(name, cmd, state, cwd, env):
    logf = open(localcp.STATE_DIR / "logs" / f"{name}.log", "ab")
    proc = subprocess.Popen([str(c) for c in cmd], stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=cwd, env=env)
    state["pids"][name] = proc.pid
    save_state(state)
    return proc


def _get_ok(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status == 200


# --- istiod ------------------------------------------------------------------------------------

def make_istiod_pki(pki):
    """A CA of our own (RSA: istiod's plugged-in CA wants it) and istiod's serving certificate for
    127.0.0.1, where the API server calls the webhook, and the in-cluster names."""
    pki.mkdir(parents=True, exist_ok=True)
    run(["openssl", "genrsa", "-out", pki / "ca.key", "2048"])
    run(["openssl", "req", "-x509", "-new", "-key", pki / "ca.key", "-subj", "/O=teg-istio-localcp/CN=istiod-ca",
         "-days", "3650", "-sha256", "-out", pki / "ca.crt",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    sans = ["IP:127.0.0.1", "DNS:localhost", f"DNS:istiod.{ISTIO_NAMESPACE}.svc",
            f"DNS:istiod.{ISTIO_NAMESPACE}.svc.cluster.local"]
    localcp._openssl_cert(pki, "istiod", "/CN=istiod",
                          f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth,clientAuth\n"
                          "keyUsage=critical,digitalSignature,keyEncipherment\n")
    # Plugged-in CA (istiod's ./etc/cacerts): no istio-ca-secret, so istiod needs no istio-system
    # namespace before istio_install creates it.
    cacerts = pki.parent / "etc" / "cacerts"
    cacerts.mkdir(parents=True, exist_ok=True)
    for target, source in (("ca-cert.pem", "ca.crt"), ("ca-key.pem", "ca.key"), ("root-cert.pem", "ca.crt"),
                           ("cert-chain.pem", "ca.crt")):
        (cacerts / target).write_bytes((pki / source).read_bytes())


def module_minor(module_dir):
    """The Istio minor the module is a snapshot of ("1.31"): its VERSION file, the version Istio's build stamps
    (Makefile.core.mk: VERSION := $(cat VERSION)-dev). Not the newest compatibility profile's minor plus one: a
    profile for N is added as N+1's behaviour changes land (compatibility-version-1.30.yaml lists "1.31 behavioral
    changes"), so the profiles follow the minor rather than say it, and a minor is no decimal to add 0.01 to."""
    return (module_dir / "VERSION").read_text().strip()


def compatibility_version(module_dir, versions):
    """The chart's compatibilityVersion for the deployed minor (ISTIOD_COMPATIBILITY_VERSION), None where that is
    the module's own minor: its defaults are that minor's, and the chart has no profile for it (its
    zzz_profile.yaml fails on an unknown compatibilityVersion)."""
    minor = versions["ISTIOD_COMPATIBILITY_VERSION"]
    return None if minor == module_minor(module_dir) else minor


def _profile_path(module_dir, minor):
    return module_dir / "manifests" / "helm-profiles" / f"compatibility-version-{minor}.yaml"


def profile_env(module_dir, minor):
    """The pilot env flags ({name: value}) of the module's compatibility profile of `minor`, None when it has none."""
    path = _profile_path(module_dir, minor)
    if not path.exists():
        return None
    profile = yaml.safe_load(path.read_text()) or {}
    return {key: str(value) for key, value in ((profile.get("pilot") or {}).get("env") or {}).items()}


def previous_profile_env(module_dir):
    """The flags of the profile of the minor before the module's own: those that turn the module's own minor's
    behaviour changes off, so none of them is set where the deployed minor is the module's ({} when it has none)."""
    major, minor = module_minor(module_dir).split(".")
    return profile_env(module_dir, f"{major}.{int(minor) - 1}") or {}


def render_istiod_chart(cluster, module_dir, versions, template):
    chart = module_dir / "manifests" / "charts" / "istio-control" / "istio-discovery"
    istio_version = localcp.MATRIX[cluster["matrix"]]["istio"].removeprefix("istio-")
    compatibility = compatibility_version(module_dir, versions)
    proc = run([Path(cluster["bins"]["helm"]) / "helm", "template", "istiod", chart, "-n", ISTIO_NAMESPACE,
                *(["--set", f"compatibilityVersion={compatibility}"] if compatibility else []),
                "--set", f"global.tag={istio_version}", "--set", f"revision={REVISION}",
                "--show-only", f"templates/{template}"])
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def compatibility_env(cluster, module_dir, versions):
    """The pilot env flags of the deployed Istio minor's compatibility profile (the chart's compatibilityVersion:
    manifests/helm-profiles/compatibility-version-<minor>.yaml of the module, `pilot.env`), checked to be what the
    chart renders into istiod's `discovery` container. Where the module is a snapshot of a later minor, these flags
    make the real istiod and the traffic suite's in-process one behave as the deployed minor; where the deployed
    minor is the module's own, there are none (compatibility_version)."""
    minor = compatibility_version(module_dir, versions)
    if minor is None:
        return {}
    wanted = profile_env(module_dir, minor)
    if wanted is None:
        raise localcp.LocalcpError(f"the istio module has no compatibility profile {minor} "
                                   f"({_profile_path(module_dir, minor)}): set ISTIOD_COMPATIBILITY_VERSION in "
                                   "tests/localcp/versions.env to a minor it has, or to its own, "
                                   f"{module_minor(module_dir)}")
    (deployment,) = [d for d in render_istiod_chart(cluster, module_dir, versions, "deployment.yaml")
                     if d.get("kind") == "Deployment"]
    (discovery,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "discovery"]
    rendered = {e["name"]: e.get("value") for e in discovery.get("env", [])}
    differ = {key: value for key, value in wanted.items() if rendered.get(key) != value}
    if differ:
        raise localcp.LocalcpError(f"istiod's Deployment rendered with compatibilityVersion={minor} lacks {differ}")
    return wanted


def write_injection_config(cluster, module_dir, versions, workdir):
    """istiod reads its injection template from ./var/lib/istio/inject/{config,values} when present
    (pilot/pkg/bootstrap/sidecarinjector.go), as the chart's ConfigMap mounts it."""
    (configmap,) = render_istiod_chart(cluster, module_dir, versions, "istiod-injector-configmap.yaml")
    inject = workdir / "var" / "lib" / "istio" / "inject"
    inject.mkdir(parents=True, exist_ok=True)
    (inject / "config").write_text(configmap["data"]["config"])
    (inject / "values").write_text(configmap["data"]["values"])


def injector_webhook(cluster, module_dir, versions, port, ca_pem):
    """The real chart's injector webhooks (same names, rules and selectors), called by URL."""
    (mwc,) = render_istiod_chart(cluster, module_dir, versions, "mutatingwebhook.yaml")
    bundle = base64.b64encode(ca_pem).decode()
    for hook in mwc["webhooks"]:
        path = hook["clientConfig"]["service"].get("path", "/inject")
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
    mwc["metadata"] = {"name": WEBHOOK_NAME, "labels": {WEBHOOK_LABEL: "true"}}
    return mwc


def start_istiod(cluster, state, binary, versions):
    workdir = STATE_DIR / "istiod"
    pki = workdir / "pki"
    make_istiod_pki(pki)
    module_dir = istio_module_dir(versions["ISTIOD_MODULE_VERSION"])
    write_injection_config(cluster, module_dir, versions, workdir)
    ports = {name: localcp.free_port() for name in ("http", "https", "grpc", "secure_grpc", "monitoring", "ctrlz")}
    state["ports"]["istiod"] = ports
    kubeconfig = client_kubeconfig(cluster, "istiod")
    # Ambient on, as the istiod chart's `profile: ambient` sets it (manifests/helm-profiles/ambient.yaml:
    # pilot.env.PILOT_ENABLE_AMBIENT), for every cluster: it adds istiod's workload API (what ztunnel reads,
    # tests/integration_real/test_ambient.py) and changes nothing for the sidecar-injected pods of the
    # other tests, whose injection template is rendered without the profile.
    # And the pilot env of the deployed minor's compatibility profile, as istiod's Deployment carries it.
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), POD_NAMESPACE=ISTIO_NAMESPACE, REVISION=REVISION or "default",
               POD_NAME="istiod-local", PILOT_ENABLE_AMBIENT="true", **compatibility_env(cluster, module_dir, versions))
    start("pilot-discovery", [
        binary, "discovery", f"--kubeconfig={kubeconfig}",
        f"--httpAddr=127.0.0.1:{ports['http']}", f"--httpsAddr=127.0.0.1:{ports['https']}",
        f"--grpcAddr=127.0.0.1:{ports['grpc']}", f"--secureGRPCAddr=127.0.0.1:{ports['secure_grpc']}",
        f"--monitoringAddr=127.0.0.1:{ports['monitoring']}", "--ctrlz_address=127.0.0.1",
        f"--ctrlz_port={ports['ctrlz']}", f"--tlsCertFile={pki / 'istiod.crt'}",
        f"--tlsKeyFile={pki / 'istiod.key'}", f"--caCertFile={pki / 'ca.crt'}", "--log_output_level=default:info",
    ], state, workdir, env)
    localcp.wait_for("istiod /ready", lambda: _get_ok(f"http://127.0.0.1:{ports['http']}/ready"), timeout=180)
    webhook = injector_webhook(cluster, module_dir, versions, ports["https"], (pki / "ca.crt").read_bytes())
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(webhook))
    log(f"istiod {versions['ISTIOD_MODULE_VERSION']} (revision {REVISION or 'default'}) ready; injection webhook on https://127.0.0.1:{ports['https']}")


# --- Envoy Gateway -----------------------------------------------------------------------------

def envoy_gateway_config():
    """The EnvoyGateway configuration the TEG Helm chart renders, out of cluster: Kubernetes provider,
    our controller name; no topology-injector webhook and no Prometheus listener (fixed ports)."""
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyGateway",
        "gateway": {"controllerName": CONTROLLER_NAME},
        "provider": {"type": "Kubernetes", "kubernetes": {"proxyTopologyInjector": {"disable": True}}},
        # TEG runs global rate limiting on its Redis (the fixture's teg-redis); without it Envoy Gateway
        # deletes the envoy-ratelimit infrastructure it manages.
        "rateLimit": {"backend": {"type": "Redis",
                                  "redis": {"url": f"teg-redis.{TEG_NAMESPACE}.svc.cluster.local:6379"}}},
        "logging": {"level": {"default": "info"}},
        "telemetry": {"metrics": {"prometheus": {"disable": True}}},
    }


def start_envoy_gateway(cluster, state, binary):
    workdir = STATE_DIR / "envoy-gateway"
    certs = workdir / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    config = workdir / "envoy-gateway.yaml"
    config.write_text(yaml.safe_dump(envoy_gateway_config()))
    env = dict(os.environ, KUBECONFIG=str(client_kubeconfig(cluster, "envoy-gateway")),
               ENVOY_GATEWAY_NAMESPACE=TEG_NAMESPACE)
    run([binary, "certgen", "--disable-topology-injector"], env=env, cwd=workdir)
    secret = json.loads(kubectl(cluster, "get", "secret", "envoy-gateway", "-n", TEG_NAMESPACE, "-o", "json").stdout)
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (certs / key).write_bytes(base64.b64decode(secret["data"][key]))
    if not Path("/certs").is_dir():
        if os.geteuid() != 0:
            raise localcp.LocalcpError("Envoy Gateway's Kubernetes provider reads its certificates from /certs: "
                                       "create that (empty) directory as root once, or run as root")
        Path("/certs").mkdir()
    # `unshare` without --fork execs: the PID we record is the one that ends up running envoy-gateway.
    start("envoy-gateway", [
        "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
        'mount --bind "$0" /certs && exec "$@"', certs, binary, "server", f"--config-path={config}",
    ], state, workdir, env)
    # controller-runtime's health probe, fixed at :8081 in the Kubernetes provider.
    localcp.wait_for("Envoy Gateway /readyz", lambda: _get_ok("http://127.0.0.1:8081/readyz"), timeout=180)
    log("Envoy Gateway ready")


# --- load-balancer addresses -------------------------------------------------------------------

def lb_addresses_loop(interval=2.0):
    """Give each Service of type LoadBalancer without an address one from TEST-NET-1, as a cloud
    controller would; runs until stopped. Under an identity of its own (CN=lb-addresses), so that the audit
    log tells its status writes from the playbook's."""
    cluster = localcp.load_state()
    kubeconfig = STATE_DIR / "lb-addresses.kubeconfig"

    def kubectl(_cluster, *args, check=True):
        return run([Path(cluster["bins"]["kubernetes"]) / "kubectl", f"--kubeconfig={kubeconfig}", *args], check=check)

    while True:
        proc = kubectl(cluster, "get", "services", "-A", "-o", "json", check=False)
        if proc.returncode == 0:
            items = json.loads(proc.stdout)["items"]
            taken = {i["ip"] for s in items for i in (s.get("status", {}).get("loadBalancer", {}).get("ingress") or [])
                     if "ip" in i}
            for svc in items:
                if svc["spec"].get("type") != "LoadBalancer" or svc.get("status", {}).get("loadBalancer", {}).get("ingress"):
                    continue
                ip = next(f"{LB_PREFIX}{n}" for n in range(1, 255) if f"{LB_PREFIX}{n}" not in taken)
                taken.add(ip)
                patch = {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
                kubectl(cluster, "patch", "service", svc["metadata"]["name"], "-n", svc["metadata"]["namespace"],
                        "--subresource=status", "--type=merge", "-p", json.dumps(patch), check=False)
        time.sleep(interval)


# --- commands ----------------------------------------------------------------------------------

def cmd_up(args):
    cluster = localcp.load_state()
    if not cluster:
        raise localcp.LocalcpError("no local cluster is running; start one with `localcp.py up` first")
    state = load_state()
    if state and all(_is_ours(state["pids"].get(n, 0), n) for n in PROCESSES):
        log("already running")
        return
    if state:
        cmd_down(args)
    bins = binaries(cluster["matrix"])
    versions = localcp.versions()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state = {"pids": {}, "ports": {}, "matrix": cluster["matrix"]}
    save_state(state)
    client_kubeconfig(cluster, "lb-addresses")
    start("lb-addresses", [sys.executable, Path(__file__), "lb-addresses"], state, STATE_DIR, dict(os.environ))
    start_istiod(cluster, state, bins["pilot-discovery"], versions)
    start_envoy_gateway(cluster, state, bins["envoy-gateway"])
    save_state(state)


def cmd_down(args):
    state = load_state()
    if not state:
        return
    cluster = localcp.load_state()
    if cluster:
        kubectl(cluster, "delete", "mutatingwebhookconfiguration", WEBHOOK_NAME, "--ignore-not-found", check=False)
    for name in reversed(PROCESSES):
        localcp.stop_component(name, state, save=save_state, is_ours=_is_ours)
    STATE_FILE.unlink()


def cmd_status(args):
    state = load_state() or {"pids": {}}
    for name in PROCESSES:
        pid = state["pids"].get(name)
        print(f"{name}: {'running pid ' + str(pid) if pid and _is_ours(pid, name) else 'stopped'}")


def cmd_lb_addresses(args):
    lb_addresses_loop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "lb-addresses"):
        sub.add_parser(name)
    args = parser.parse_args(argv)
    try:
        globals()["cmd_" + args.command.replace("-", "_")](args)
    except localcp.LocalcpError as exc:
        print(f"controllers: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"controllers: {' '.join(map(str, exc.cmd))} failed: {exc.stderr}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
