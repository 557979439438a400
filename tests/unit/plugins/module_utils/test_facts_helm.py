"""Reading Helm releases from Helm's Secrets (module_utils/facts.read_helm_releases): which revision
counts, how the payload is decoded, and what a broken Secret gives. The Secrets that real helm writes
are read in tests/integration/test_istio_install.py (a rerun there runs no helm process)."""

import base64
import gzip
import json

import pytest
from ansible_collections.teg.istio.plugins.module_utils.cluster import TegIstioError
from ansible_collections.teg.istio.plugins.module_utils.facts import read_helm_releases


def _secret(name, revision, status, chart_version="1.29.6", values=None, compress=True, payload=None, labels=None,
            apply_method=None):
    release = {"name": name, "namespace": "istio-system", "version": revision,
               "info": {"status": status, "last_deployed": "2026-11-26T23:37:01Z"},
               "chart": {"metadata": {"name": name.replace("istio-", ""), "version": chart_version,
                                      "appVersion": chart_version}, "templates": []},
               "config": values}
    if apply_method:  # Helm 4 records how it applied the release; Helm 3 has no such field
        release["apply_method"] = apply_method
    raw = json.dumps(release).encode()
    encoded = payload if payload is not None else base64.b64encode(gzip.compress(raw) if compress else raw)
    return {"metadata": {"name": "sh.helm.release.v1.%s.v%s" % (name, revision), "namespace": "istio-system",
                         "labels": dict({"owner": "helm", "name": name, "version": str(revision), "status": status,
                                         "createdAt": "1796000000"}, **(labels or {}))},
            "data": {"release": base64.b64encode(encoded).decode()}}


class _Secrets(object):
    """Answers the one list request read_helm_releases makes, recording it."""

    def __init__(self, items):
        self.client = self
        self.items = items
        self.requests = []

    def request(self, method, path, serialize=True, **params):
        self.requests.append((method, path, params))
        return type("Response", (), {"data": json.dumps({"items": self.items})})()


def test_newest_revision_of_each_release_in_the_shape_of_helm_info():
    client = _Secrets([_secret("istiod", 1, "failed", values={"a": 1}),
                       _secret("istiod", 2, "deployed", values={"a": 2},
                               labels={"app.kubernetes.io/managed-by": "teg.istio"}, apply_method="ssa"),
                       _secret("istio-base", 1, "deployed", compress=False)])
    found = read_helm_releases(client, "istio-system", ["istio-base", "istiod", "istiod-canary"])
    assert found["istiod"] == {"name": "istiod", "namespace": "istio-system", "revision": "2", "status": "deployed",
                               "chart": "istiod-1.29.6", "app_version": "1.29.6",
                               "updated": "2026-11-26T23:37:01Z", "values": {"a": 2},
                               # The release's own labels (helm --labels), without those Helm's storage sets.
                               "labels": {"app.kubernetes.io/managed-by": "teg.istio"},
                               # Helm 4's record of server-side apply; a Helm 3 release (istio-base) has none.
                               "apply_method": "ssa"}
    assert found["istio-base"]["chart"] == "base-1.29.6" and found["istio-base"]["values"] == {}
    assert found["istio-base"]["labels"] == {} and found["istio-base"]["apply_method"] is None
    assert found["istiod-canary"] is None
    assert client.requests == [("GET", "/api/v1/namespaces/istio-system/secrets", {
        "label_selector": "owner=helm,name in (istio-base,istiod,istiod-canary),status!=superseded"})]


def test_a_secret_without_a_revision_number_is_not_a_release():
    bad = _secret("istiod", 9, "deployed")
    bad["metadata"]["labels"]["version"] = "latest"
    assert read_helm_releases(_Secrets([bad]), "istio-system", ["istiod"]) == {"istiod": None}


def test_no_names_no_request():
    client = _Secrets([])
    assert read_helm_releases(client, "istio-system", []) == {}
    assert client.requests == []


def test_an_unreadable_release_names_the_secret_and_the_fix():
    with pytest.raises(TegIstioError) as err:
        read_helm_releases(_Secrets([_secret("istiod", 3, "deployed", payload=b"not a release")]), "istio-system",
                           ["istiod"])
    msg = str(err.value)
    assert msg.startswith("Secret istio-system/sh.helm.release.v1.istiod.v3 is not a Helm 3 release this collection "
                          "can read (")
    assert msg.endswith("): check it with `helm history istiod -n istio-system`")
    assert "\n" not in msg
