"""A real Kubernetes control plane on 127.0.0.1, for the collection's tests and demo.

    localcp.py up [--matrix current|legacy]   start (idempotent), install CRDs and the TEG fixture
    localcp.py down                           stop every process it started (by PID), remove state
    localcp.py env                            print `export` lines (KUBECONFIG, PATH)
    localcp.py status                         one line per process
    localcp.py reset                          back to what `up` left (between test scenarios)
    localcp.py stop-apiserver [--kill] | start-apiserver   fault injection for the recovery tests (--kill:
                                              SIGKILL, no graceful end of the requests in flight)
    localcp.py crds-dir                       print the upstream CRD folder (fetching the pinned files if needed)
    localcp.py delete-crds NAME...            delete CRDs and wait until they are gone (delete_crds: without
                                              the minutes a CRD made moments before can take)

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the kwok controller (one fake
Node, so Pods run and Deployments become Available) are binaries that build.sh made from their Go
modules. The API server enforces the real upstream CRD schemas of the flavour and writes an audit
log of every mutating request (the witness for the idempotence and check-mode tests), and of every request
of the ServiceAccounts the least-privilege tests bind to rbac/ (AUDIT_POLICY).

A hand-written launcher rather than kwokctl: the tests stop and restart the API server in the
middle of a run and read its audit log, which needs the process handles and flags in our hands.
State lives in $LOCALCP_DIR (default: <repo>/.localcp).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATE_DIR = Path(os.environ.get("LOCALCP_DIR", REPO / ".localcp"))
STATE_FILE = STATE_DIR / "state.json"
KUBECONFIG = STATE_DIR / "kubeconfig"

# The flavours: which upstream CRD folders (of the folder crds_dir() resolves) a cluster gets.
MATRIX = {
    "current": {"envoy_gateway": "envoy-gateway-v1.9.0", "istio": "istio-1.31.4"},
    "legacy": {"envoy_gateway": "envoy-gateway-v0.5.0", "istio": "istio-1.19.10"},
}
# The pins of versions.env that differ between the lanes (the legacy lane's carry the prefix LEGACY_).
LANE_PINS = ("KUBERNETES_VERSION", "HELM_VERSION")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# With the stand-in controllers only: the stand-in for Istio's sidecar injector (injector.py).
INJECTOR = "injector"
NODE_NAME = "kwok-node-0"
SERVICE_CIDR = "10.96.0.0/16"


class LocalcpError(Exception):
    """A failure with a one-line message for the user."""


def log(msg):
    print(f"[localcp] {msg}", file=sys.stderr, flush=True)


def versions():
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def lane_versions(matrix):
    """versions.env as the lane `matrix` sees it: the legacy lane's LEGACY_KUBERNETES_VERSION and LEGACY_HELM_VERSION
    under the names KUBERNETES_VERSION and HELM_VERSION (its cluster's Kubernetes and helm)."""
    pins = versions()
    if matrix == "legacy":
        for key in LANE_PINS:
            pins[key] = pins[f"LEGACY_{key}"]
    return pins


def bin_dirs(matrix):
    """The cache directories build.sh fills for the lane `matrix`; built when missing."""
    proc = subprocess.run([str(HERE / "build.sh"), "--print", matrix], capture_output=True, text=True, check=True)
    dirs = [Path(p) for p in proc.stdout.split()]
    wanted = {"kube-apiserver": dirs[0], "etcd": dirs[1], "kwok": dirs[2], "helm": dirs[3]}
    if not all((d / name).exists() for name, d in wanted.items()):
        log("building the control plane binaries (first time for these versions; see docs/local-control-plane.md)")
        build = subprocess.run([str(HERE / "build.sh")], stdout=subprocess.DEVNULL, check=False)
        if build.returncode != 0:
            raise LocalcpError("building the binaries failed; see the output of tests/localcp/build.sh above")
    return dirs


def crds_download_dir():
    """The CRD folder fetch_crds fills from crds.lock when TEG_ISTIO_CRDS_DIR is unset: TEG_ISTIO_CRDS_DOWNLOAD_DIR,
    default <cache>/crds-gomod (TEG_ISTIO_CACHE, default ~/.cache/teg-istio, the cache build.sh uses)."""
    if os.environ.get("TEG_ISTIO_CRDS_DOWNLOAD_DIR"):
        return Path(os.environ["TEG_ISTIO_CRDS_DOWNLOAD_DIR"])
    cache = Path(os.environ.get("TEG_ISTIO_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "teg-istio"))
    return cache / "crds-gomod"


def crds_dir():
    """The upstream CRD folder, the one place the tests get it from (tests/lint/lint.sh refuses any other):
    TEG_ISTIO_CRDS_DIR when set (a folder laid out as <folder>/<file>), else crds_download_dir(), which fetch_crds
    brings to the pinned files of crds.lock: out of Go modules through the Go module proxy (verified against the
    go.sum of the wrapper modules tests/localcp/gomod/crds*), the few the proxy does not serve downloaded (from
    TEG_ISTIO_CRDS_BASE_URL where set), every file verified by SHA-256."""
    configured = os.environ.get("TEG_ISTIO_CRDS_DIR")
    if configured:
        if not Path(configured).is_dir():
            raise LocalcpError(f"TEG_ISTIO_CRDS_DIR={configured} is not a folder; point it at a CRD folder "
                               "(<folder>/<file>, tests/localcp/crds.lock) or unset it to use the pinned CRDs")
        return Path(configured)
    target = crds_download_dir()
    import fetch_crds
    try:
        fetch_crds.fetch(target, os.environ.get("TEG_ISTIO_CRDS_BASE_URL"))
    except SystemExit as exc:
        raise LocalcpError(str(exc)) from exc
    return target


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd, **kwargs):
    check = kwargs.pop("check", True)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(cmd, check=check, **kwargs)


# --- PKI -------------------------------------------------------------------------------------

def _openssl_key(path):
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path)])


def _openssl_cert(pki, name, subject, ext):
    key, csr, crt = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt"
    _openssl_key(key)
    run(["openssl", "req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr)])
    extfile = pki / f"{name}.ext"
    extfile.write_text(ext)
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
         "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", str(extfile), "-out", str(crt)])


def make_pki(pki):
    pki.mkdir(parents=True)
    _openssl_key(pki / "ca.key")
    run(["openssl", "req", "-x509", "-new", "-key", str(pki / "ca.key"), "-subj", "/CN=teg-istio-localcp-ca",
         "-days", "3650", "-sha256", "-out", str(pki / "ca.crt"),
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    sans = ["IP:127.0.0.1", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local"]
    _openssl_cert(pki, "apiserver", "/CN=kube-apiserver",
                  f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth\n"
                  "keyUsage=critical,digitalSignature,keyEncipherment\n")
    clients = {
        "admin": "/O=system:masters/CN=admin",
        "controller-manager": "/CN=system:kube-controller-manager",
        "scheduler": "/CN=system:kube-scheduler",
        "kwok": "/O=system:masters/CN=kwok-controller",
    }
    for name, subject in clients.items():
        _openssl_cert(pki, name, subject, "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
    _openssl_key(pki / "sa.key")
    run(["openssl", "ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")])


def write_kubeconfig(path, server, pki, user):
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "localcp", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate": str(pki / f"{user}.crt"),
                                          "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": "localcp", "context": {"cluster": "localcp", "user": user}}],
        "current-context": "localcp",
    }
    path.write_text(yaml.safe_dump(doc))


# Every mutating request, and every request at all of the ServiceAccounts in rbac/binding-example.yml's namespace
# (the identities the tests bind to rbac/clusterrole.yml): what they read too is what the least-privilege test
# compares with the ClusterRoles (tests/integration/rbac_audit.py).
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:teg-istio-automation"]
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""


# --- processes -------------------------------------------------------------------------------

def component_args(name, state):
    d = Path(state["dir"])
    pki = d / "pki"
    ports = state["ports"]
    bins = state["bins"]
    if name == "etcd":
        return [f"{bins['etcd']}/etcd", "--name=node0", f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-cluster=node0=http://127.0.0.1:{ports['etcd_peer']}",
                "--unsafe-no-fsync=true", "--log-level=warn"]
    if name == "kube-apiserver":
        return [f"{bins['kubernetes']}/kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
                # No default route offline: advertise loopback and do not reconcile the
                # `kubernetes` Endpoints (which would reject a loopback address).
                "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC", "--allow-privileged=true",
                f"--audit-policy-file={d / 'audit-policy.yaml'}", f"--audit-log-path={d / 'audit.log'}",
                "--audit-log-format=json", "--audit-log-mode=blocking"]
    if name == "kube-controller-manager":
        kc = d / "controller-manager.kubeconfig"
        return [f"{bins['kubernetes']}/kube-controller-manager", f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", f"--secure-port={ports['controller_manager']}",
                "--leader-elect=false", "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # kwok's Nodes send leases; evict nothing if the controller is slow on 2 cores.
                "--node-monitor-grace-period=120s"]
    if name == "kube-scheduler":
        kc = d / "scheduler.kubeconfig"
        return [f"{bins['kubernetes']}/kube-scheduler", f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}", "--leader-elect=false"]
    if name == INJECTOR:
        return [sys.executable, str(HERE / "injector.py"), "serve", f"--state-dir={d}", f"--port={ports[INJECTOR]}"]
    if name == "kwok":
        return [f"{bins['kwok']}/kwok", f"--kubeconfig={d / 'kwok.kubeconfig'}",
                "--manage-all-nodes=true", "--cidr=10.244.0.0/16", "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{ports['kwok']}", "--node-lease-duration-seconds=40"]
    raise ValueError(name)


def start_component(name, state):
    d = Path(state["dir"])
    logf = open(d / "logs" / f"{name}.log", "ab")
    proc = subprocess.Popen(component_args(name, state), stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=d)
    state["pids"][name] = proc.pid
    save_state(state)


def _is_ours(pid, name):
    """True when the PID is alive and still runs the binary we started (PIDs get reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if name == INJECTOR:
        return len(argv) > 1 and argv[1].endswith(b"injector.py")
    return os.path.basename(argv[0].decode()) == name


def _exited(pid):
    """True once the process is gone or only a zombie waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] == "Z"


def stop_component(name, state, timeout=20, save=None, is_ours=None):
    """Stop the process group of `name` (TERM, then KILL after `timeout`; KILL only with timeout 0) if it
    still runs what we started. `save` and `is_ours` default to this cluster's; controllers.py passes its own."""
    pid = state["pids"].pop(name, None)
    (save or save_state)(state)
    if not pid or not (is_ours or _is_ours)(pid, name):
        return
    if timeout:
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _exited(pid):
        time.sleep(0.2)
    if not _exited(pid):
        os.killpg(pid, signal.SIGKILL)
        while not _exited(pid):
            time.sleep(0.1)


def save_state(state):
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE_FILE)


def load_state():
    if not STATE_FILE.exists():
        return None
    return json.loads(STATE_FILE.read_text())


# --- readiness -------------------------------------------------------------------------------

def wait_for(what, check, timeout=120, interval=0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 -- any failure means "not yet"; the last one is reported
            last = exc
        time.sleep(interval)
    raise LocalcpError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def _apiserver_ok(state, path="/readyz"):
    pki = Path(state["dir"]) / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"https://127.0.0.1:{state['ports']['apiserver']}{path}"
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        return resp.status == 200


def _etcd_ok(state):
    with urllib.request.urlopen(f"http://127.0.0.1:{state['ports']['etcd']}/health", timeout=5) as resp:
        return json.loads(resp.read()).get("health") == "true"


def kubectl(state, *args, stdin=None, check=True):
    return run([f"{state['bins']['kubernetes']}/kubectl", f"--kubeconfig={KUBECONFIG}", *args],
               input=stdin, check=check)


def _crd_documents(path):
    """Only the CustomResourceDefinitions of a bundle (EG v0.5's Gateway API bundle also carries an
    admission webhook Deployment whose ValidatingWebhookConfiguration would block every write)."""
    with open(path) as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc and doc.get("kind") == "CustomResourceDefinition"]


def install_crds(state, folder):
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        docs.extend(_crd_documents(path))
    stream = yaml.safe_dump_all(docs)
    kubectl(state, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=stream)
    names = [f"crd/{doc['metadata']['name']}" for doc in docs]
    kubectl(state, "wait", "--for=condition=Established", "--timeout=60s", *names)
    return len(docs)


def fixture_path(matrix):
    return REPO / "tests" / "fixtures" / "teg" / f"{matrix}.yaml"


# --- commands --------------------------------------------------------------------------------

def cmd_up(args):
    matrix = args.matrix
    state = load_state()
    if state:
        if state["matrix"] != matrix:
            raise LocalcpError(f"a {state['matrix']} cluster is running in {STATE_DIR}; "
                               f"run `make cluster-down` before starting a {matrix} one")
        if all(_is_ours(state["pids"].get(c, 0), c) for c in _components(state)) and _apiserver_ok(state):
            log(f"already up ({matrix}); KUBECONFIG={KUBECONFIG}")
            _real_controllers(args, "up")
            return
        log("found a partly running cluster: stopping it and starting afresh")
        cmd_down(args)

    started = time.monotonic()
    dirs = bin_dirs(matrix)
    crds = crds_dir()
    flavour = MATRIX[matrix]
    for key in flavour.values():
        if not (crds / key).is_dir():
            raise LocalcpError(f"{crds / key} is missing; TEG_ISTIO_CRDS_DIR must hold the folders {sorted(flavour.values())}")

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "logs").mkdir(exist_ok=True)
    state = {
        "dir": str(STATE_DIR), "matrix": matrix, "crds": str(crds), "pids": {},
        "bins": {"kubernetes": str(dirs[0]), "etcd": str(dirs[1]), "kwok": str(dirs[2]), "helm": str(dirs[3])},
        "ports": {name: free_port() for name in
                  ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok", INJECTOR)},
        "controllers": args.controllers,
        "versions": lane_versions(matrix),
    }
    save_state(state)
    pki = STATE_DIR / "pki"
    make_pki(pki)
    server = f"https://127.0.0.1:{state['ports']['apiserver']}"
    write_kubeconfig(KUBECONFIG, server, pki, "admin")
    for user in ("controller-manager", "scheduler", "kwok"):
        write_kubeconfig(STATE_DIR / f"{user}.kubeconfig", server, pki, user)
    (STATE_DIR / "audit-policy.yaml").write_text(AUDIT_POLICY)
    link_clients(state)

    try:
        start_component("etcd", state)
        wait_for("etcd", lambda: _etcd_ok(state), timeout=60)
        start_component("kube-apiserver", state)
        wait_for("kube-apiserver /readyz", lambda: _apiserver_ok(state), timeout=180)
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            start_component(name, state)
        if args.controllers != "real":
            start_injector(state)
        kubectl(state, "apply", "-f", "-", stdin=yaml.safe_dump(fake_node()))
        kubectl(state, "wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout=120s")
        # The controller-manager's first ServiceAccount took over 120 s with several clusters starting on 2 busy
        # cores (2026-12-05); a cluster that is merely slow must not fail a test.
        wait_for("ServiceAccount default/default (controller-manager running)",
                 lambda: kubectl(state, "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
                 timeout=300)
        count = install_crds(state, crds / flavour["envoy_gateway"])
        kubectl(state, "apply", "--server-side", "-f", str(fixture_path(matrix)))
        # 300 s, as for the ServiceAccount above: the fleet's three clusters starting at once beside the other lane
        # of make test missed 120 s here (2026-12-05).
        kubectl(state, "wait", "--for=condition=Available", "--timeout=300s", "-n", "envoy-gateway-system",
                "deployment", "--all")
        stage_test_charts(matrix)
    except (LocalcpError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        log(f"cluster-up failed: {detail}; logs in {STATE_DIR / 'logs'}")
        raise LocalcpError(f"cluster-up failed: {detail.splitlines()[-1] if detail else exc}") from exc
    state["up_seconds"] = round(time.monotonic() - started, 1)
    save_state(state)
    log(f"up ({matrix}) in {state['up_seconds']}s: Kubernetes {state['versions']['KUBERNETES_VERSION']}, "
        f"helm {state['versions']['HELM_VERSION']}, "
        f"{count} Envoy Gateway CRDs from {crds / flavour['envoy_gateway']}, TEG fixture; KUBECONFIG={KUBECONFIG}")
    _real_controllers(args, "up")


def _real_controllers(args, command):
    """The opt-in real Envoy Gateway controller and istiod (controllers.py, docs/real-controllers.md)."""
    if command == "up" and getattr(args, "controllers", "") != "real":
        return
    import controllers
    if command == "down" and not controllers.STATE_FILE.exists():
        return
    if controllers.main([command]) != 0:
        raise LocalcpError(f"controllers.py {command} failed; logs in {STATE_DIR / 'logs'}")


def _components(state):
    return COMPONENTS + ((INJECTOR,) if state.get("controllers", "stand-in") != "real" else ())


def start_injector(state):
    """The stand-in for Istio's sidecar injector (injector.py) and its webhook, before any pod is created."""
    import injector
    pki = Path(state["dir"]) / "pki"
    _openssl_cert(pki, injector.CERT, f"/O=system:masters/CN={injector.NAME}",
                  "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
                  "keyUsage=critical,digitalSignature\n")
    start_component(INJECTOR, state)
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    wait_for("the stand-in injector", lambda: _tls_answers(state["ports"][INJECTOR], context), timeout=60)
    webhook = injector.webhook_configuration(state["ports"][INJECTOR], (pki / "ca.crt").read_bytes())
    kubectl(state, "apply", "-f", "-", stdin=yaml.safe_dump(webhook))


def _tls_answers(port, context):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock, \
                context.wrap_socket(sock, server_hostname="127.0.0.1"):
            return True
    except OSError:
        return False


def link_clients(state):
    """A stable place for the built clients: PATH=$LOCALCP_DIR/bin:$PATH is all a caller needs."""
    bin_dir = STATE_DIR / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool, where in (("kubectl", "kubernetes"), ("helm", "helm")):
        link = bin_dir / tool
        if not link.is_symlink():
            link.symlink_to(Path(state["bins"][where]) / tool)


def stage_test_charts(matrix):
    """istio_install's test stand-ins for Istio's charts at the flavour's Istio version, with its real
    CRDs, in STATE_DIR/charts (tests/charts/README.md); `make site` installs Istio from there."""
    run([sys.executable, str(REPO / "tests" / "charts" / "prepare.py"), str(STATE_DIR / "charts"), "--matrix", matrix])


def fake_node():
    resources = {"cpu": "32", "memory": "256Gi", "pods": "250"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME, "type": "kwok"},
                     "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        "status": {"allocatable": resources, "capacity": resources},
    }


def cmd_down(args):
    state = load_state()
    if not state:
        log("no cluster state; nothing to stop")
        return
    _real_controllers(args, "down")
    for name in reversed(COMPONENTS + (INJECTOR,)):
        stop_component(name, state)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    log("down")


def running_state():
    """The running cluster's state; a one-line error when none runs."""
    state = load_state()
    if not state:
        raise LocalcpError("no local cluster is running; start one with `make cluster-up`")
    return state


def cmd_env(args):
    state = running_state()
    link_clients(state)
    print(f"export KUBECONFIG={KUBECONFIG}")
    print(f"export PATH={STATE_DIR / 'bin'}:$PATH")
    print(f"export LOCALCP_MATRIX={state['matrix']}")
    # For tests/localcp/site-vars.yml: where istio_install finds the test charts, and their version.
    print(f"export TEG_ISTIO_TEST_CHARTS={STATE_DIR / 'charts' / 'archives'}")
    print(f"export TEG_ISTIO_TEST_ISTIO_VERSION={MATRIX[state['matrix']]['istio'].removeprefix('istio-')}")


def cmd_status(args):
    state = load_state()
    if not state:
        print("down")
        return
    for name in _components(state):
        pid = state["pids"].get(name)
        print(f"{name}: {'running pid ' + str(pid) if pid and _is_ours(pid, name) else 'stopped'}")


# Namespaces cluster-up creates or Kubernetes owns; `reset` removes every other one.
BASE_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease", "envoy-gateway-system"}


def cmd_reset(args):
    """Back to what cluster-up left: every namespace, Helm release, webhook, cluster role and Istio CRD
    added since removed, and the TEG fixture re-created from scratch (our labels, annotations and
    references on its objects gone)."""
    state = running_state()
    names = kubectl(state, "get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations", "clusterroles",
                 "clusterrolebindings"):
        kubectl(state, "delete", kind, "-l", "app.kubernetes.io/managed-by in (Helm,teg.istio)",
                "--ignore-not-found")
    crds = kubectl(state, "get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    istio = [c for c in crds if c.endswith(".istio.io")]
    if istio:
        delete_crds(state, istio)
    doomed = [n for n in names if n not in BASE_NAMESPACES] + ["envoy-gateway-system"]
    kubectl(state, "delete", "namespace", *doomed, "--wait=true", "--timeout=180s", "--ignore-not-found")
    kubectl(state, "delete", "gatewayclass", "--all", "--wait=true")
    kubectl(state, "apply", "--server-side", "-f", str(fixture_path(state["matrix"])))
    kubectl(state, "wait", "--for=condition=Available", "--timeout=300s", "-n", "envoy-gateway-system",
            "deployment", "--all")


def delete_crds(state, names, timeout=180):
    """Delete CRDs and wait until they are gone. A CRD deleted moments after it was made (a test's site.yml that
    stopped early, then reset) can stay Terminating for minutes: its finalizer could not list the instances while
    their storage was still initializing ("could not list instances: storage is (re)initializing") and retries with
    a growing backoff (Kubernetes' crd_finalizer.go; operator-framework/operator-controller#1437). Any update of a
    CRD queues it again at once, so the wait touches an annotation on those left every few seconds."""
    kubectl(state, "delete", "crd", *names, "--wait=false", "--ignore-not-found")
    attempt = 0

    def gone():
        nonlocal attempt
        left = sorted(set(names) & set(kubectl(state, "get", "crd", "-o",
                                               "jsonpath={.items[*].metadata.name}").stdout.split()))
        attempt += 1
        if left and attempt % 5 == 0:
            kubectl(state, "annotate", "crd", *left, f"teg-istio.localcp/requeue={attempt}", "--overwrite",
                    check=False)
        return not left
    wait_for(f"CRDs {', '.join(names)} to be deleted", gone, timeout=timeout, interval=1)


def cmd_delete_crds(args):
    state = running_state()
    delete_crds(state, args.names)


def cmd_crds_dir(args):
    print(crds_dir())


def cmd_stop_apiserver(args):
    state = load_state() or {}
    if not state:
        raise LocalcpError("no local cluster is running")
    # --kill: no TERM first, so a request held in admission is cut off before it is stored or answered.
    stop_component("kube-apiserver", state, timeout=0 if args.kill else 20)


def cmd_start_apiserver(args):
    state = load_state()
    if not state:
        raise LocalcpError("no local cluster is running")
    if not _is_ours(state["pids"].get("kube-apiserver", 0), "kube-apiserver"):
        start_component("kube-apiserver", state)
    wait_for("kube-apiserver /readyz", lambda: _apiserver_ok(state), timeout=180)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--matrix", choices=sorted(MATRIX), default=os.environ.get("MATRIX", "current"))
    up.add_argument("--controllers", choices=["stand-in", "real"], default=os.environ.get("CONTROLLERS") or "stand-in",
                    help="real: also run the Envoy Gateway controller and istiod (docs/real-controllers.md)")
    for name in ("down", "env", "status", "reset", "start-apiserver", "crds-dir"):
        sub.add_parser(name)
    sub.add_parser("stop-apiserver").add_argument("--kill", action="store_true")
    sub.add_parser("delete-crds").add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    handler = globals()["cmd_" + args.command.replace("-", "_")]
    try:
        handler(args)
    except LocalcpError as exc:
        print(f"localcp: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
