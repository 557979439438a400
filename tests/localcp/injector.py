"""The stand-in for Istio's sidecar injector in the local control plane. NOT Istio's injector: it injects no
working proxy, only what a pod injected by Istio is recognised by. `localcp.py up` runs it with the stand-in
controllers (the default); with CONTROLLERS=real the real istiod injects and this does not run.

    injector.py serve --state-dir DIR --port PORT    serve the webhook (localcp.py starts it)

A mutating admission webhook on https://127.0.0.1:PORT (its certificate signed by the cluster's CA), registered
as the MutatingWebhookConfiguration `teg-istio-stand-in-injector` with the namespace selectors of the real
istiod chart's injector webhooks (istio/istio manifests/charts/istio-control/istio-discovery/templates/
mutatingwebhook.yaml: `istio-injection=enabled`, the default revision; or no `istio-injection` label and
`istio.io/rev=<revision>`). For a pod created in such a namespace it adds, when an injector of that revision is
installed and the pod does not opt out (`sidecar.istio.io/inject: "false"`, label or annotation):

- a container `istio-proxy` with the proxy image of that revision's istiod (`<hub>/proxyv2:<tag>` of its
  `<hub>/pilot:<tag>`), which kwok runs like any container;
- the annotation `sidecar.istio.io/status` with the revision, as Istio's injector records it (pkg/kube/inject);
- the annotation `teg-istio.test/stand-in-injected: "true"`, so that the traffic suite (tests/simulate/run.py) takes
  these additions back off (`undo`) and injects the pod with the real istiod chart's template, as before.

"Installed": a MutatingWebhookConfiguration labelled `app=sidecar-injector` with `istio.io/rev` (or the revision
tag `istio.io/tag`, which wins) equal to the revision, as istio_install's stand-in istiod chart makes (tests/charts), and
that revision's istiod Deployment (`app=istiod`, `istio.io/rev`). So, as with Istio: a pod restarted into a
namespace labelled for injection comes back with a sidecar once Istio is installed, one restarted after the
label is gone comes back without, and strict_mtls's safety check reads the pods as it would read Istio's.
"""

import argparse
import base64
import http.server
import json
import ssl
import sys
import urllib.parse
import urllib.request
from pathlib import Path

NAME = "teg-istio-stand-in-injector"
# Labelled so that `localcp.py reset` (which removes webhooks managed by Helm or teg.istio) leaves it alone.
LABEL = "teg-istio.test/stand-in-injector"
CERT = "stand-in-injector"
SIDECAR = "istio-proxy"
STATUS_ANNOTATION = "sidecar.istio.io/status"
INJECT_OPT_OUT = "sidecar.istio.io/inject"
MARK = "teg-istio.test/stand-in-injected"


def webhook_configuration(port, ca_pem):
    """The MutatingWebhookConfiguration, selectors as the real chart's: the default revision by istio-injection,
    a named one by istio.io/rev where istio-injection is absent; pods that opt out by label are not sent."""
    client = {"url": f"https://127.0.0.1:{port}/inject", "caBundle": base64.b64encode(ca_pem).decode()}
    not_opted_out = {"matchExpressions": [{"key": INJECT_OPT_OUT, "operator": "NotIn", "values": ["false"]}]}
    selectors = {
        "namespace.stand-in-injector.teg-istio.test": [
            {"key": "istio-injection", "operator": "In", "values": ["enabled"]}],
        "rev.namespace.stand-in-injector.teg-istio.test": [
            {"key": "istio-injection", "operator": "DoesNotExist"}, {"key": "istio.io/rev", "operator": "Exists"}],
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": {LABEL: "true"}},
        "webhooks": [{
            "name": name, "clientConfig": client,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchExpressions": expressions}, "objectSelector": not_opted_out,
            # As Istio's own: a pod that should have a sidecar is never created without one (the ReplicaSet
            # controller retries).
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
        } for name, expressions in selectors.items()],
    }


def requested_revision(namespace_labels):
    """The revision a namespace asks for, by the real chart's selectors (None: no injection)."""
    if namespace_labels.get("istio-injection") == "enabled":
        return "default"
    if "istio-injection" not in namespace_labels:
        return namespace_labels.get("istio.io/rev")
    return None


def proxy_image(pilot_image):
    """`<hub>/proxyv2:<tag>` for istiod's `<hub>/pilot:<tag>`."""
    hub, tag = pilot_image.rsplit(":", 1)
    return f"{hub.rsplit('/', 1)[0]}/proxyv2:{tag}"


def injection(api, namespace, pod):
    """(proxy image, revision) to inject into `pod` created in `namespace`, or None."""
    meta = pod.get("metadata") or {}
    if "false" in ((meta.get("labels") or {}).get(INJECT_OPT_OUT), (meta.get("annotations") or {}).get(INJECT_OPT_OUT)):
        return None
    requested = requested_revision(api(f"/api/v1/namespaces/{namespace}")["metadata"].get("labels") or {})
    if requested is None:
        return None
    hooks = api("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations?"
                + urllib.parse.urlencode({"labelSelector": "app=sidecar-injector"}))["items"]
    labels = [h["metadata"].get("labels") or {} for h in hooks]
    # A revision tag of that name (istioctl's tag webhook) wins over a revision of that name, as its webhook's
    # selectors do in Istio.
    revisions = {lb.get("istio.io/rev") for lb in labels if lb.get("istio.io/tag") == requested} or \
        {lb.get("istio.io/rev") for lb in labels if lb.get("istio.io/rev") == requested and "istio.io/tag" not in lb}
    if len(revisions) != 1 or None in revisions:
        return None
    (revision,) = revisions
    istiods = api("/apis/apps/v1/deployments?" + urllib.parse.urlencode(
        {"labelSelector": f"app=istiod,istio.io/rev={revision}"}))["items"]
    if not istiods:
        return None
    return proxy_image(istiods[0]["spec"]["template"]["spec"]["containers"][0]["image"]), revision


def patch(pod, image, revision):
    """The JSON patch: the sidecar container appended, the status annotation added."""
    ops = [{"op": "add", "path": "/spec/containers/-", "value": {"name": SIDECAR, "image": image}}]
    status = json.dumps({"initContainers": [], "containers": [SIDECAR], "volumes": [], "imagePullSecrets": None,
                         "revision": revision})
    if not (pod.get("metadata") or {}).get("annotations"):
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    for key, value in ((STATUS_ANNOTATION, status), (MARK, "true")):
        ops.append({"op": "add", "path": "/metadata/annotations/" + key.replace("/", "~1"), "value": value})
    return ops


def undo(pod):
    """`pod` (a dict as read) without what this stand-in added, when it added anything: as created."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.pop(MARK, None) is not None:
        annotations.pop(STATUS_ANNOTATION, None)
        pod["spec"]["containers"] = [c for c in pod["spec"]["containers"] if c.get("name") != SIDECAR]
    return pod


def api_client(state_dir, server):
    pki = Path(state_dir) / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / f"{CERT}.crt"), str(pki / f"{CERT}.key"))

    def get(path):
        with urllib.request.urlopen(server + path, context=context, timeout=5) as resp:
            return json.loads(resp.read())
    return get


def review(api, body):
    request = body["request"]
    response = {"uid": request["uid"], "allowed": True}
    pod = request.get("object") or {}
    if not any(c.get("name") == SIDECAR for c in (pod.get("spec") or {}).get("containers") or []):
        found = injection(api, request["namespace"], pod)
        if found:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch(pod, *found)).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def serve(state_dir, port):
    state = json.loads((Path(state_dir) / "state.json").read_text())
    api = api_client(state_dir, f"https://127.0.0.1:{state['ports']['apiserver']}")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            try:
                answer = review(api, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            except Exception as exc:  # noqa: BLE001 -- any failure is the API server's "webhook failed" (Fail)
                print(f"[injector] {exc}", file=sys.stderr, flush=True)
                self.send_error(500)
                return
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    pki = Path(state_dir) / "pki"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki / f"{CERT}.crt"), str(pki / f"{CERT}.key"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_args = sub.add_parser("serve")
    serve_args.add_argument("--state-dir", required=True)
    serve_args.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.state_dir, args.port)


if __name__ == "__main__":
    main()
