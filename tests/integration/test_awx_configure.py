"""playbooks/awx_configure.yml run for real (awx.awx's modules, ansible-playbook) against a stand-in of AWX's REST
API on 127.0.0.1 (awx_standin.py: objects in memory, writes recorded; no AWX server can run here, so AWX's own
validation and the job runs are not covered: docs/awx.md, "What was verified here"). It needs no cluster.

- without teg_awx_clusters it creates what it did before the fleet: one inventory with localhost and the three
  job templates with the Kubernetes credential, and nothing of the fleet;
- with teg_awx_clusters it also creates the fleet as docs/awx.md describes it: the credential type that writes a
  kubeconfig for the job and names it by K8S_AUTH_KUBECONFIG, its credential, an inventory with one host per
  cluster (its context as a host variable) in the group, and job templates that run on the group;
- a cluster given a token as a host variable is refused before any write;
- the Kubernetes credential verifies TLS without a CA (verify_ssl true, no empty CA input, and
  teg_istio_validate_certs true in the job templates' extra vars, since AWX's injector sets K8S_AUTH_VERIFY_SSL=False
  whenever the credential has no CA); only teg_awx_k8s_insecure_skip_tls_verify turns it off, with the warning;
- the workflow job templates run site.yml (teardown.yml) in check mode, an approval node, then the change (and
  verify.yml after site.yml), node after node on success; a schedule runs the verify job template by
  teg_awx_verify_schedule_rrule (none when empty); a second run writes nothing;
- surveys never override a host: the job's extra vars as AWX builds them (the template's extra vars, then the survey
  answers) given to tests/integration/playbooks/role_settings.yml with the fleet inventory's host variables leave
  every role on each cluster's own namespace and Istio version; the single-cluster survey's namespace answer reaches
  every role; a variable set in both teg_awx_site_vars and a cluster's vars is refused before any write."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from awx_standin import AwxStandIn
from conftest import JSON_CALLBACK, MATRIX, REPO, task_results

# It needs no cluster, so the flavour changes nothing: the current lane runs it, the legacy lane does not.
pytestmark = pytest.mark.skipif(MATRIX != "current", reason="needs no cluster: the same in both flavours")

PLAYBOOK = REPO / "playbooks" / "awx_configure.yml"
CLUSTERS = [{"name": "eu-prod", "vars": {"teg_istio_context": "eu-prod"}},
            {"name": "us-prod", "vars": {"teg_istio_context": "us-prod"}}]
KUBECONFIG = "apiVersion: v1\nkind: Config\ncontexts: [{name: eu-prod}, {name: us-prod}]\n"
SITE_VARS = {"expose_app_sample": True, "strict_mtls_mesh_namespaces": ["envoy-gateway-system", "httpbin"]}
TEMPLATES = ("teg.istio site", "teg.istio verify", "teg.istio teardown")


def configure(awx, extra_vars, env=None):
    if "teg_awx_k8s_token" not in extra_vars and not awx.named("credentials", "teg.istio kubernetes"):
        awx.seed("credentials", "teg.istio kubernetes")  # referenced by name, as on a controller that has it
    if not awx.named("credential_types", "OpenShift or Kubernetes API Bearer Token"):  # built in
        awx.seed("credential_types", "OpenShift or Kubernetes API Bearer Token", kind="kubernetes", managed=True)
    env = dict(os.environ, CONTROLLER_HOST=awx.url, CONTROLLER_OAUTH_TOKEN="standin-oauth-token",
               CONTROLLER_VERIFY_SSL="false", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), **(env or {}))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(PLAYBOOK), "-e",
           json.dumps(dict({"teg_awx_site_vars": SITE_VARS}, **extra_vars))]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)


def loaded(value):
    """awx.awx sends variables and extra_vars as a JSON or YAML string."""
    return yaml.safe_load(value) if isinstance(value, str) else value


def test_without_clusters_nothing_of_the_fleet_is_created():
    with AwxStandIn() as awx:
        proc = configure(awx, {})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert sorted(o["name"] for o in awx.objects["inventories"].values()) == ["teg.istio"]
        assert sorted(o["name"] for o in awx.objects["job_templates"].values()) == sorted(TEMPLATES)
        for name in TEMPLATES:
            assert awx.associated("job_templates", name, "credentials") == ["teg.istio kubernetes"]
        assert [o["name"] for o in awx.objects["credential_types"].values()] == [
            "OpenShift or Kubernetes API Bearer Token"]  # the built-in one, seeded
        assert "groups" not in awx.objects


def test_the_fleet_inventory_has_a_host_per_cluster_and_job_templates_on_its_group():
    with AwxStandIn() as awx:
        proc = configure(awx, {"teg_awx_clusters": CLUSTERS, "teg_awx_fleet_kubeconfig": KUBECONFIG,
                               "teg_awx_fleet_serial": [1, "100%"]})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

        kind = awx.named("credential_types", "teg.istio fleet kubeconfig")
        assert loaded(kind["injectors"]) == {"file": {"template": "{{ kubeconfig }}"},
                                             "env": {"K8S_AUTH_KUBECONFIG": "{{ tower.filename }}"}}
        assert [f["id"] for f in loaded(kind["inputs"])["fields"]] == ["kubeconfig"]
        credential = awx.named("credentials", "teg.istio fleet kubeconfig")
        assert credential["credential_type"] == kind["id"]
        assert loaded(credential["inputs"]) == {"kubeconfig": KUBECONFIG}

        fleet = awx.named("inventories", "teg.istio fleet")
        hosts = {o["name"]: o for o in awx.objects["hosts"].values() if o["inventory"] == fleet["id"]}
        assert {name: loaded(h["variables"]) for name, h in hosts.items()} == {c["name"]: c["vars"] for c in CLUSTERS}
        group = awx.named("groups", "teg_clusters")
        assert group["inventory"] == fleet["id"]
        assert awx.associated("groups", "teg_clusters", "hosts") == ["eu-prod", "us-prod"]
        assert loaded(group["variables"]) == {"ansible_connection": "local",
                                              "ansible_python_interpreter": "{{ ansible_playbook_python }}"}

        for name in TEMPLATES:
            template = awx.named("job_templates", f"{name} fleet")
            assert template["inventory"] == fleet["id"], name
            assert awx.associated("job_templates", f"{name} fleet", "credentials") == ["teg.istio fleet kubeconfig"]
            assert loaded(template["extra_vars"]) == dict(SITE_VARS, teg_istio_clusters="teg_clusters",
                                                          teg_istio_serial=[1, "100%"]), name
            single = awx.named("job_templates", name)
            assert loaded(single["extra_vars"]) == dict(SITE_VARS, teg_istio_validate_certs=True), name
            assert single["inventory"] != fleet["id"], name


def test_a_token_in_the_fleet_inventory_is_refused_before_any_write():
    with AwxStandIn() as awx:
        clusters = CLUSTERS + [{"name": "staging", "vars": {"teg_istio_host": "https://k8s:6443",
                                                            "teg_istio_api_key": "a-token"}}]
        proc = configure(awx, {"teg_awx_clusters": clusters})
        assert proc.returncode != 0
        assert "teg_awx_clusters: staging carry teg_istio_api_key" in proc.stdout, proc.stdout[-3000:]
        assert awx.writes == []


K8S = {"teg_awx_k8s_host": "https://k8s.example.com:6443", "teg_awx_k8s_token": "a-token"}
WARNING_TASK = "Warn that TLS verification is off for the Kubernetes credential"


def _validate_certs(awx):
    """teg_istio_validate_certs in each single-cluster job template's extra vars."""
    return {name: loaded(awx.named("job_templates", name)["extra_vars"]).get("teg_istio_validate_certs")
            for name in TEMPLATES}


def test_tls_is_verified_without_a_ca():
    with AwxStandIn() as awx:
        proc = configure(awx, K8S, env=JSON_CALLBACK)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        inputs = loaded(awx.named("credentials", "teg.istio kubernetes")["inputs"])
        assert inputs["verify_ssl"] is True and "ssl_ca_cert" not in inputs, inputs
        assert _validate_certs(awx) == dict.fromkeys(TEMPLATES, True)
        assert [r.get("skipped") for r in task_results(_Run(proc), WARNING_TASK)] == [True]


def test_tls_is_verified_against_the_ca_given():
    with AwxStandIn() as awx:
        proc = configure(awx, dict(K8S, teg_awx_k8s_ca_cert="-----BEGIN CERTIFICATE-----\nCA\n"))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        inputs = loaded(awx.named("credentials", "teg.istio kubernetes")["inputs"])
        assert (inputs["verify_ssl"], inputs["ssl_ca_cert"]) == (True, "-----BEGIN CERTIFICATE-----\nCA\n")
        assert _validate_certs(awx) == dict.fromkeys(TEMPLATES, True)


def test_tls_verification_is_off_only_when_asked_and_then_with_a_warning():
    with AwxStandIn() as awx:
        proc = configure(awx, dict(K8S, teg_awx_k8s_insecure_skip_tls_verify=True), env=JSON_CALLBACK)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert loaded(awx.named("credentials", "teg.istio kubernetes")["inputs"])["verify_ssl"] is False
        assert _validate_certs(awx) == dict.fromkeys(TEMPLATES, False)
        [warning] = task_results(_Run(proc), WARNING_TASK)
        assert warning["msg"].startswith("WARNING: TLS verification is OFF for credential teg.istio kubernetes "), warning


def test_a_ca_with_tls_verification_off_is_refused_before_any_write():
    with AwxStandIn() as awx:
        proc = configure(awx, dict(K8S, teg_awx_k8s_insecure_skip_tls_verify=True, teg_awx_k8s_ca_cert="CA"))
        assert proc.returncode != 0
        assert "teg_awx_k8s_insecure_skip_tls_verify is true but teg_awx_k8s_ca_cert is given" in proc.stdout, \
            proc.stdout[-3000:]
        assert awx.writes == []


class _Run:
    """What conftest.task_results reads of a run: its JSON callback stdout."""

    def __init__(self, proc):
        self.stdout, self.output = proc.stdout, proc.stdout + proc.stderr


def _job_extra_vars(awx, template):
    """The extra vars of a launch of `template` as AWX builds them: the template's extra vars, then each survey
    question answered (here with a value of its own, where it takes text, so that an answer that reached a role
    would show)."""
    job_template = awx.named("job_templates", template)
    answers = {}
    for question in (awx.surveys.get(job_template["id"]) or {}).get("spec") or []:
        answers[question["variable"]] = ("from-the-survey" if question["type"] == "text"
                                         else question["choices"][-1])
    return dict(loaded(job_template["extra_vars"]), **answers)


def _role_settings(tmp_path, hosts, extra_vars):
    """{host: the settings every role would use} of tests/integration/playbooks/role_settings.yml run with an
    inventory of `hosts` ({name: host variables}) and `extra_vars`."""
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
           str(REPO / "tests" / "integration" / "playbooks" / "role_settings.yml"), "-e", json.dumps(extra_vars)]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), **JSON_CALLBACK),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    play = json.loads(proc.stdout)["plays"][0]
    [report] = [task for task in play["tasks"] if task["task"]["name"] == "Report the settings each role would use"]
    return {host: result["msg"] for host, result in report["hosts"].items()}


NAMESPACES = ("teg_istio_prep_namespace", "teg_restart_namespace", "expose_app_gateway_namespace",
              "expose_app_virtualservice_namespace", "verify_teg_namespace")


def test_a_survey_answer_does_not_override_a_cluster_host_variable(tmp_path):
    clusters = [{"name": "eu-prod", "vars": {"teg_istio_context": "eu-prod", "teg_istio_namespace": "teg-eu",
                                             "istio_install_version": "1.28.0"}},
                {"name": "us-prod", "vars": {"teg_istio_context": "us-prod"}}]
    with AwxStandIn() as awx:
        proc = configure(awx, {"teg_awx_clusters": clusters, "teg_awx_fleet_kubeconfig": KUBECONFIG})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        fleet = awx.named("inventories", "teg.istio fleet")
        hosts = {o["name"]: loaded(o["variables"]) for o in awx.objects["hosts"].values() if o["inventory"] == fleet["id"]}
        for template in TEMPLATES:
            settings = _role_settings(tmp_path, hosts, _job_extra_vars(awx, f"{template} fleet"))
            eu, us = settings["eu-prod"], settings["us-prod"]
            assert {name: eu[name] for name in NAMESPACES} == dict.fromkeys(NAMESPACES, "teg-eu"), template
            assert eu["istio_install_version"] == "1.28.0", template
            assert {name: us[name] for name in NAMESPACES} == dict.fromkeys(NAMESPACES, "envoy-gateway-system"), template
            assert us["istio_install_version"] == "1.31.4", template


def test_the_single_cluster_survey_namespace_reaches_every_role(tmp_path):
    with AwxStandIn() as awx:
        proc = configure(awx, {})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        for template in TEMPLATES:
            settings = _role_settings(tmp_path, {"localhost": {"ansible_connection": "local"}},
                                      _job_extra_vars(awx, template))["localhost"]
            assert {name: settings[name] for name in NAMESPACES} == dict.fromkeys(NAMESPACES, "from-the-survey")
            assert {settings[name] for name in ("teg_istio_prep_gatewayclass", "teg_restart_gatewayclass",
                                                "expose_app_gateway_class", "verify_gatewayclass")} == {"from-the-survey"}


def test_a_variable_set_for_the_fleet_and_for_a_cluster_is_refused_before_any_write():
    with AwxStandIn() as awx:
        proc = configure(awx, {"teg_awx_clusters": CLUSTERS + [{"name": "staging",
                                                                "vars": {"teg_istio_namespace": "teg-staging"}}],
                               "teg_awx_site_vars": dict(SITE_VARS, teg_istio_namespace="teg")})
        assert proc.returncode != 0
        assert "teg_awx_site_vars sets teg_istio_namespace, which teg_awx_clusters also set per cluster" in proc.stdout, \
            proc.stdout[-3000:]
        assert awx.writes == []


def _workflow(awx, name):
    """The unified job template each node runs (an approval: "approval: <its name>"), its job type, in the order
    the nodes lead to each other on success from the one no node leads to."""
    workflow = awx.named("workflow_job_templates", name)
    nodes = [n for n in awx.objects["workflow_job_template_nodes"].values() if n["workflow_job_template"] == workflow["id"]]
    targets = {linked["id"] for n in nodes for linked in awx.linked(n)}
    [node] = [n for n in nodes if n["id"] not in targets]
    steps = []
    while node is not None:
        if node["type"] == "workflow_job_template_node" and "unified_job_template" in node:
            for endpoint in ("job_templates", "workflow_approval_templates"):
                template = awx.objects.get(endpoint, {}).get(node["unified_job_template"])
                if template is not None:
                    kind = "approval: " if endpoint == "workflow_approval_templates" else ""
                    steps.append((kind + template["name"], node.get("job_type")))
        [node] = awx.linked(node) or [None]
    assert len(steps) == len(nodes), nodes
    return steps


def test_workflows_put_an_approval_between_the_check_and_the_change_and_verify_runs_daily():
    with AwxStandIn() as awx:
        proc = configure(awx, {"teg_awx_approval_timeout": 3600})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert _workflow(awx, "teg.istio site workflow") == [
            ("teg.istio site", "check"), ("approval: teg.istio site workflow: Apply what the check job showed?", None),
            ("teg.istio site", "run"), ("teg.istio verify", "run")]
        assert _workflow(awx, "teg.istio teardown workflow") == [
            ("teg.istio teardown", "check"),
            ("approval: teg.istio teardown workflow: Take TEG out of the mesh as the check job showed?", None),
            ("teg.istio teardown", "run")]
        approvals = list(awx.objects["workflow_approval_templates"].values())
        assert [a["timeout"] for a in approvals] == [3600, 3600]
        [schedule] = awx.objects["schedules"].values()
        assert schedule["unified_job_template"] == awx.named("job_templates", "teg.istio verify")["id"]
        assert schedule["rrule"] == "DTSTART:20260101T050000Z RRULE:FREQ=DAILY;INTERVAL=1" and schedule["enabled"]
        # A second run writes nothing: no second node, approval or schedule, no update.
        writes = len(awx.writes)
        proc = configure(awx, {"teg_awx_approval_timeout": 3600})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert awx.writes[writes:] == []


def test_the_schedule_takes_its_rule_and_an_empty_one_makes_none():
    with AwxStandIn() as awx:
        proc = configure(awx, {"teg_awx_verify_schedule_rrule": "DTSTART:20260101T220000Z RRULE:FREQ=WEEKLY;BYDAY=MO"})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert [s["rrule"] for s in awx.objects["schedules"].values()] == [
            "DTSTART:20260101T220000Z RRULE:FREQ=WEEKLY;BYDAY=MO"]
    with AwxStandIn() as awx:
        proc = configure(awx, {"teg_awx_verify_schedule_rrule": ""})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert "schedules" not in awx.objects
