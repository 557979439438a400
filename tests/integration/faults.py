"""Fault injection for the recovery tests: the API server dies at an exact point of a playbook run.

`WriteGate` is a validating admission webhook served on 127.0.0.1 (its certificate signed by the cluster's own
CA) that sees every write of the playbook's identity (`admin`; a matchCondition keeps the cluster's controllers
out), dry runs admitted unseen. It admits writes until it meets the one to cut at (`cut(request, admitted)`
says which, from the writes admitted so far), and answers that one never: it kills the API server (SIGKILL,
`localcp.py stop-apiserver --kill`) while the request waits in admission, so nothing of it is stored and
the client sees its connection cut. What was admitted before is stored, whatever the timing on a busy
machine: a stop after polling the audit log would let the run go on for a moment of varying length.
"""

import base64
import http.server
import json
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "localcp"))
import localcp  # noqa: E402  (the cluster's CA signs the webhook's serving certificate)

WEBHOOK = "teg-istio-test-fault-gate"
# The identity whose writes the gate sees: the kubeconfig's admin, unless a test runs the playbook as another user.
PLAYBOOK_USER = "admin"


def describe(request):
    """`CREATE namespaces istio-system`, `UPDATE deployments envoy-gateway-system/teg-redis`, ..."""
    name = request.get("name") or (request.get("object") or {}).get("metadata", {}).get("name")
    # A Namespace's own request carries its name as the namespace.
    namespaced = request.get("namespace") and request["resource"]["resource"] != "namespaces"
    where = "%s/%s" % (request["namespace"], name) if namespaced else name
    return "%s %s %s" % (request["operation"], request["resource"]["resource"], where)


class WriteGate:
    """Kill the API server at the playbook's first write that `cut(request, admitted)` matches (module docstring);
    `admitted`: the descriptions of the writes let through before it, in order."""

    def __init__(self, cluster, cut, user=PLAYBOOK_USER):
        self.cluster, self.cut, self.user = cluster, cut, user
        self.admitted, self.cut_at = [], None
        self._cut_done = threading.Event()
        self._lock = threading.Lock()

    def _review(self, review):
        request = review["request"]
        allowed = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": request["uid"], "allowed": True}}
        if request.get("dryRun") or request["userInfo"]["username"] != self.user:
            return allowed
        with self._lock:
            if self.cut_at is None and not self.cut(request, self.admitted):
                self.admitted.append(describe(request))
                return allowed
            if self.cut_at is not None:
                return allowed  # the API server started again: the gate admits all until it is removed
            self.cut_at = describe(request)
            # Unanswered: the API server dies waiting for this review.
            self.cluster.localcp("stop-apiserver", "--kill")
        self._cut_done.set()
        return None

    def _handler(self):
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = gate._review(json.loads(body))
                if answer is None:
                    return
                data = json.dumps(answer).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the API server that asked is gone

            def log_message(self, *args):
                pass

        return Handler

    def __enter__(self):
        pki = self.cluster.state_dir / "pki"
        if not (pki / "fault-gate.crt").exists():
            localcp._openssl_cert(pki, "fault-gate", "/CN=teg-istio-test-fault-gate",
                                  "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                                  "keyUsage=critical,digitalSignature\n")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pki / "fault-gate.crt"), str(pki / "fault-gate.key"))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        webhook = {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK},
            "webhooks": [{
                "name": "fault-gate.teg-istio.test",
                "clientConfig": {"url": "https://127.0.0.1:%d/validate" % self.server.server_address[1],
                                 "caBundle": base64.b64encode((pki / "ca.crt").read_bytes()).decode()},
                "rules": [{"operations": ["CREATE", "UPDATE", "DELETE"], "apiGroups": ["*"], "apiVersions": ["*"],
                           "resources": ["*"], "scope": "*"}],
                "matchConditions": [{"name": "the-playbook-only",
                                     "expression": "request.userInfo.username == '%s'" % self.user}],
                # Fail: a write the gate could not see must not slip through.
                "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 30,
            }],
        }
        self.cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(webhook))
        return self

    def __exit__(self, *exc):
        self.cluster.kubectl("delete", "validatingwebhookconfiguration", WEBHOOK, "--ignore-not-found")
        self.server.shutdown()
        self.server.server_close()
        return False


def cut_off(cluster, cmd, env, cwd, cut, timeout=600, user=PLAYBOOK_USER):
    """Run `cmd` (a playbook) with the API server killed at the write `cut` matches (WriteGate), wait for the
    playbook to end, start the API server again. Returns (returncode, stdout, stderr, the write cut off, the
    writes admitted before it); fails when the playbook ends without meeting the cut."""
    with WriteGate(cluster, cut, user) as gate, tempfile.TemporaryFile("w+") as out, \
            tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            if gate.cut_at is not None:
                gate._cut_done.wait(60)
                cluster.localcp("start-apiserver")
        assert gate.cut_at is not None, "the run ended (rc %s) without the write to cut at; admitted: %s\n%s" % (
            proc.returncode, gate.admitted, _read(err)[-3000:])
        return proc.returncode, _read(out), _read(err), gate.cut_at, gate.admitted


def _read(fh):
    fh.seek(0)
    return fh.read()
