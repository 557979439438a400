"""playbooks/awx_configure.yml run for real (awx.awx's modules, ansible-playbook) against a stand-in of AWX's REST
API on 127.0.0.1 (awx_standin.py: objects in memory, writes recorded; no AWX server can run here, so AWX's own
validation and the job runs are not covered: docs/awx.md, "What was verified here"). It needs no cluster.

- without teg_awx_clusters it creates what it did before the fleet: one inventory with localhost and the three
  job templates with the Kubernetes credential, and nothing of the fleet;
- with teg_awx_clusters it also creates the fleet as docs/awx.md describes it: the credential type that writes a
  kubeconfig for the job and names it by K8S_AUTH_KUBECONFIG, its credential, an inventory with one host per
  cluster (its context as a host variable) in the group, and job templates that run on the group;
- a cluster given a token as a host variable is refused before any write."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from awx_standin import AwxStandIn
from conftest import REPO

PLAYBOOK = REPO / "playbooks" / "awx_configure.yml"
CLUSTERS = [{"name": "eu-prod", "vars": {"teg_istio_context": "eu-prod"}},
            {"name": "us-prod", "vars": {"teg_istio_context": "us-prod"}}]
KUBECONFIG = "apiVersion: v1\nkind: Config\ncontexts: [{name: eu-prod}, {name: us-prod}]\n"
SITE_VARS = {"expose_app_sample": True, "strict_mtls_mesh_namespaces": ["envoy-gateway-system", "httpbin"]}
TEMPLATES = ("teg.istio site", "teg.istio verify", "teg.istio teardown")


def configure(awx, extra_vars):
    awx.seed("credentials", "teg.istio kubernetes")  # referenced by name, as on a controller that has it
    env = dict(os.environ, CONTROLLER_HOST=awx.url, CONTROLLER_OAUTH_TOKEN="standin-oauth-token",
               CONTROLLER_VERIFY_SSL="false", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(PLAYBOOK), "-e",
           json.dumps(dict(extra_vars, teg_awx_site_vars=SITE_VARS))]
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
        assert "credential_types" not in awx.objects and "groups" not in awx.objects


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
            assert loaded(single["extra_vars"]) == SITE_VARS and single["inventory"] != fleet["id"], name


def test_a_token_in_the_fleet_inventory_is_refused_before_any_write():
    with AwxStandIn() as awx:
        clusters = CLUSTERS + [{"name": "staging", "vars": {"teg_istio_host": "https://k8s:6443",
                                                            "teg_istio_api_key": "a-token"}}]
        proc = configure(awx, {"teg_awx_clusters": clusters})
        assert proc.returncode != 0
        assert "teg_awx_clusters: staging carry teg_istio_api_key" in proc.stdout, proc.stdout[-3000:]
        assert awx.writes == []
