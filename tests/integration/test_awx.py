"""site.yml, verify.yml and teardown.yml as AWX jobs run them, under the least-privilege ClusterRoles of rbac/.

AWX installs the project's collections/requirements.yml, then runs ansible-runner with a private data directory
whose environment holds what the "OpenShift or Kubernetes API Bearer Token" credential injects: K8S_AUTH_HOST,
K8S_AUTH_API_KEY, K8S_AUTH_VERIFY_SSL and K8S_AUTH_SSL_CA_CERT (awx/main/models/credential/injectors.py), and no
kubeconfig. The token is a ServiceAccount's, bound only to rbac/clusterrole.yml as rbac/binding-example.yml binds
it. site.yml, verify.yml, then teardown.yml as it is, with teardown_istio, and with istio_install_remove_crds as
well must succeed with only that identity writing; the token must appear nowhere in the site job's output or
artifacts, at verbosity 3; a rule taken away gives one line naming it; the jobs' every request, read back from the
audit log, was granted (the last test). The RBAC differs by flavour
(EnvoyProxy's API group), so this runs in both. These run the test stand-ins of Istio's charts: whether the
ClusterRoles hold what Istio's real charts need is not tested here.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import rbac_audit
from conftest import JSON_CALLBACK, REPO, SITE_VARS, assert_one_line_failure, is_run_lock

RBAC = REPO / "rbac"
SA_NAMESPACE, SA_NAME = "teg-istio-automation", "teg-istio"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"
BIN = Path(sys.executable).parent
ENVOYPROXY_GROUP = {"current": "gateway.envoyproxy.io", "legacy": "config.gateway.envoyproxy.io"}


@pytest.fixture(scope="module")
def identity(cluster):
    """The ServiceAccount of rbac/binding-example.yml bound to rbac/clusterrole.yml, and a token for it."""
    cluster.localcp("reset")  # reset removes the example's namespace: apply it afterwards
    env = rbac_audit.bind(cluster)[SA_NAME]
    yield {"token": env["K8S_AUTH_API_KEY"], "host": env["K8S_AUTH_HOST"], "ca": env["K8S_AUTH_SSL_CA_CERT"]}
    rbac_audit.unbind(cluster)


def _credential_env(identity):
    return {"K8S_AUTH_HOST": identity["host"], "K8S_AUTH_API_KEY": identity["token"],
            "K8S_AUTH_VERIFY_SSL": "True", "K8S_AUTH_SSL_CA_CERT": identity["ca"]}


def _site_vars(cluster):
    """tests/localcp/site-vars.yml with its env lookups resolved, as a survey would send literal values."""
    text = re.sub(r"\{\{ lookup\('ansible\.builtin\.env', '(\w+)'\) \}\}", lambda m: cluster.env[m.group(1)],
                  SITE_VARS.read_text())
    return yaml.safe_load(text)


def _without_rule(predicate):
    """rbac/clusterrole.yml with the rules of both ClusterRoles changed by `predicate(rule)`: None drops a rule,
    a list replaces it with its rules."""
    roles = yaml.safe_load((RBAC / "clusterrole.yml").read_text())  # one List of the two
    for role in roles["items"]:
        changed = [predicate(rule) for rule in role["rules"]]
        role["rules"] = [r for c in changed if c is not None for r in (c if isinstance(c, list) else [c])]
    return yaml.safe_dump(roles)


def _drop_crd_read(rule):
    if rule["resources"] == ["customresourcedefinitions"]:
        return dict(rule, verbs=[v for v in rule["verbs"] if v != "get"]) if rule["verbs"] != ["get"] else None
    return rule


def _drop_service_patch(rule):
    """patch taken away from services only, in every rule that grants it (teg-istio's, and teg-istio-install's
    for the Services of Istio's charts); the rule's other resources keep every verb."""
    if "services" in rule["resources"] and "patch" in rule["verbs"]:
        others = [r for r in rule["resources"] if r != "services"]
        services = dict(rule, resources=["services"], verbs=[v for v in rule["verbs"] if v != "patch"])
        return [services] + ([dict(rule, resources=others)] if others else [])
    return rule


@pytest.mark.parametrize("edit, expected", [
    (_drop_crd_read, ['forbidden (403) to read CustomResourceDefinition envoyproxies.{group}',
                      f'User "{SA_USER}" cannot get resource "customresourcedefinitions" in API group '
                      '"apiextensions.k8s.io" at the cluster scope']),
    (_drop_service_patch, ["forbidden (403) to patch Service envoy-gateway-system/envoy-gateway",
                           f'User "{SA_USER}" cannot patch resource "services" in API group "" in the namespace '
                           '"envoy-gateway-system"']),
], ids=["crd-get", "service-patch"])
def test_a_missing_rule_is_named_in_the_error(cluster, play, identity, edit, expected):
    cluster.kubectl("apply", "-f", "-", stdin=_without_rule(edit))
    try:
        run = play("site.yml", env=dict(_credential_env(identity), K8S_AUTH_KUBECONFIG="", KUBECONFIG="",
                                        **JSON_CALLBACK))
    finally:
        cluster.kubectl("apply", "-f", str(RBAC / "clusterrole.yml"))
    group = ENVOYPROXY_GROUP[cluster.matrix]
    assert_one_line_failure(run, cause=[fragment.format(group=group) for fragment in expected],
                            fix=["grant that verb on that resource"])


def _private_data_dir(tmp_path, cluster, identity):
    """What AWX hands ansible-runner: project, inventory, env/envvars (the credential only), env/extravars."""
    pdd = tmp_path / "pdd"
    (pdd / "env").mkdir(parents=True)
    (pdd / "inventory").mkdir()
    (pdd / "project").symlink_to(REPO)  # AWX copies the project checkout here
    ca = pdd / "env" / "k8s_ca.crt"  # AWX writes the credential's CA into the private data dir too
    ca.write_text(Path(identity["ca"]).read_text())
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(dict(_credential_env(identity), K8S_AUTH_SSL_CA_CERT=str(ca))))
    (pdd / "env" / "settings").write_text(yaml.safe_dump({"suppress_ansible_output": False}))
    (pdd / "inventory" / "hosts").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    # The project update: ansible-galaxy installs collections/requirements.yml (this checkout, as a collection).
    collections = pdd / "requirements_collections"
    galaxy = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "-r", "collections/requirements.yml",
                             "-p", str(collections)], cwd=REPO, capture_output=True, text=True, check=False,
                            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"),
                                 "ANSIBLE_COLLECTIONS_PATH": str(collections)})
    assert galaxy.returncode == 0, galaxy.stdout + galaxy.stderr
    assert (collections / "ansible_collections" / "teg" / "istio" / "MANIFEST.json").exists(), galaxy.stdout
    return pdd, collections


@pytest.fixture(scope="module")
def awx(cluster, identity, tmp_path_factory):
    """Run a playbook of the project as an AWX job template would: job(playbook, ident, extra vars, -v flags)
    returns the process, its artifacts directory and the writes of the token's identity."""
    tmp_path = tmp_path_factory.mktemp("awx")
    home = tmp_path / "home"
    home.mkdir()
    pdd, collections = _private_data_dir(tmp_path, cluster, identity)
    # Only what the job's process needs: no KUBECONFIG, and a HOME without ~/.kube/config.
    env = {"PATH": f"{cluster.env['PATH'].split(':')[0]}:{BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "ANSIBLE_COLLECTIONS_PATH": str(collections)}

    def job(playbook, ident, extra_vars=None, verbosity=()):
        # The job template's extra vars: the same app declarations for site, verify and teardown (docs/awx.md).
        (pdd / "env" / "extravars").write_text(yaml.safe_dump(dict(_site_vars(cluster), **(extra_vars or {}))))
        position = cluster.audit_position()
        proc = subprocess.run([str(BIN / "ansible-runner"), "run", str(pdd), "-p", f"playbooks/{playbook}", "-i", ident,
                               *verbosity], env=env, capture_output=True, text=True, check=False)
        artifacts = pdd / "artifacts" / ident
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert (artifacts / "status").read_text() == "successful"
        # Only the token's identity wrote.
        assert cluster.mutations_since(position, user="admin") == []
        return proc, artifacts, cluster.mutations_since(position, user=SA_USER), pdd, collections

    job.since = cluster.audit_position()  # every request of the jobs below is read back by the last test
    return job


def _exists(cluster, *args):
    return cluster.get_or_none(*args) is not None


def _istio_crds(cluster):
    names = cluster.kubectl("get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    return [n for n in names if n.endswith(".istio.io")]


def test_site_as_an_awx_job(cluster, identity, awx):
    proc, artifacts, writes, pdd, collections = awx("site.yml", "site", verbosity=["-vvv"])
    assert "-vvv" in (artifacts / "command").read_text()
    # The job used the collection the project update installed, and the token's identity did the writes.
    assert str(collections / "ansible_collections" / "teg" / "istio") in proc.stdout
    assert ("create", "peerauthentications") in {(e["verb"], e["objectRef"]["resource"]) for e in writes}, writes
    mode = cluster.kubectl("get", "peerauthentication", "default", "-n", "istio-system",
                           "-o", "jsonpath={.spec.mtls.mode}").stdout
    assert mode == "STRICT"
    # Nowhere in what the job leaves: not the token, nor its payload or signature on their own. One exception,
    # ansible-runner's own: artifacts/<ident>/command records the process environment (the credential's variables
    # included), mode 0600, in every run; AWX keeps a redacted copy (safe_env) and removes the private data dir.
    secrets = [identity["token"], *identity["token"].split(".")[1:]]
    leaks = [name for name, text in [("stdout", proc.stdout), ("stderr", proc.stderr)] if any(s in text for s in secrets)]
    command = artifacts / "command"
    for path in sorted(p for p in artifacts.rglob("*") if p.is_file()):
        content = path.read_bytes()
        if path == command:
            assert command.stat().st_mode & 0o077 == 0, oct(command.stat().st_mode)
            recorded = json.loads(content)
            assert recorded["env"].pop("K8S_AUTH_API_KEY") == identity["token"]
            content = json.dumps(recorded).encode()
        if any(s.encode() in content for s in secrets):
            leaks.append(str(path.relative_to(pdd)))
    assert leaks == [], f"the credential's token appears in {leaks}"


def _job_artifacts(artifacts):
    """What AWX keeps as the job's artifacts: the artifact_data of ansible-runner's playbook_on_stats event (the
    run's set_stats data, per_host false)."""
    events = [json.loads(path.read_text()) for path in (artifacts / "job_events").glob("*.json")]
    [stats] = [e for e in events if e.get("event") == "playbook_on_stats"]
    return stats["event_data"]["artifact_data"]


def test_verify_as_an_awx_job(awx):
    _proc, artifacts, writes, _pdd, _collections = awx("verify.yml", "verify")
    assert writes == []
    # The checks, published for the job's artifacts (and a workflow's next nodes): every one passed.
    report = _job_artifacts(artifacts)["teg_istio_verify"]
    assert list(report) == ["localhost"]
    assert report["localhost"]["passed"] == report["localhost"]["total"] > 0 and report["localhost"]["failed"] == []


def test_teardown_as_awx_jobs_with_and_without_istio_and_its_crds(cluster, awx):
    """The default teardown keeps Istio; teardown_istio removes its releases and namespace, keeping its CRDs (and
    with them every Istio resource of the cluster); istio_install_remove_crds removes those too."""
    _proc, _artifacts, writes, _pdd, _collections = awx("teardown.yml", "teardown")
    assert ("delete", "peerauthentications") in {(e["verb"], e["objectRef"]["resource"]) for e in writes}, writes
    labels = json.loads(cluster.kubectl("get", "namespace", "envoy-gateway-system", "-o", "json").stdout)["metadata"]
    assert "istio-injection" not in labels.get("labels", {})
    assert _exists(cluster, "deployment", "istiod", "-n", "istio-system")
    crds = _istio_crds(cluster)
    assert crds

    awx("teardown.yml", "teardown-istio", {"teardown_istio": True})
    assert not _exists(cluster, "namespace", "istio-system")
    assert _istio_crds(cluster) == crds

    _proc, _artifacts, writes, _pdd, _collections = awx("teardown.yml", "teardown-istio-crds",
                                                        {"teardown_istio": True, "istio_install_remove_crds": True})
    # Apart from the run lock's Lease, which a teardown with something to undo takes.
    assert {(e["verb"], e["objectRef"]["resource"]) for e in writes if not is_run_lock(e)} == {
        ("delete", "customresourcedefinitions")}
    assert _istio_crds(cluster) == []


def test_the_clusterroles_granted_every_request_of_the_jobs(cluster, awx):
    """Every request of the jobs above (site, verify, the three teardowns: sidecar mode), read from the audit log:
    none refused; what they used goes to the session's report of the verbs rbac/ grants and no run used."""
    events = rbac_audit.events_since(cluster, awx.since, {SA_USER})
    assert events, "no request of the ServiceAccount in the audit log"
    assert rbac_audit.forbidden(events) == []
    rbac_audit.record(f"test_awx ({cluster.matrix})", rbac_audit.needed(events))
