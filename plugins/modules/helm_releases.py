#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: helm_releases
short_description: Install, upgrade or uninstall Helm releases in order, helm running from the task's own process
version_added: 0.2.0
description:
  - Installs or upgrades (C(helm upgrade --install)) each release of O(releases) in the given order, or
    uninstalls them (C(helm uninstall)) with O(state=absent), in one namespace.
  - Reads the releases first from the Secrets in which Helm keeps them (its default storage driver), so a
    release already deployed from the same chart name and version with exactly O(releases[].values) as
    user-supplied values is left alone, and nothing runs helm.
  - helm runs as a subprocess of the process that runs the task. With the collection's action plugin, on the
    controller, that is ansible-playbook itself, so no module process starts. It gets the connection settings
    of the task's options or of C(K8S_AUTH_*), as M(kubernetes.core.helm) gives them to helm.
  - With O(create_namespace), the namespace is created first (labelled C(app.kubernetes.io/managed-by=teg.istio))
    when it does not exist, so that a later uninstall can tell it made it.
author:
  - teg.istio maintainers (@teg-istio)
options:
  namespace:
    description: The namespace of the releases.
    type: str
    required: true
  create_namespace:
    description: Create O(namespace) when it does not exist (a server-side dry run in check mode).
    type: bool
    default: false
  releases:
    description: The releases, in the order to install them (uninstalled in this order too).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The release name.
        type: str
        required: true
      chart:
        description:
          - A chart archive or folder on the host that runs the task, or with O(chart_repo_url) the chart's name in
            that repository. Required with O(state=present).
        type: str
      values:
        description: The values, exactly; helm's defaults of the chart apply to what is not given.
        type: dict
        default: {}
      labels:
        description:
          - Labels of the release record (C(helm --labels), Helm 3.13 or later), merged with those it already has.
            Helm keeps them as labels of the release's Secrets.
        type: dict
        default: {}
      force:
        description:
          - Force the upgrade, and run helm even when the release is in place, for example for a release left C(failed).
          - Helm 3 gets C(--force). Helm 4 gets C(--force-conflicts) for a release it applied server-side (the release
            record's C(apply_method) C(ssa), its default) and C(--force-replace) otherwise (it refuses to replace with
            server-side apply).
        type: bool
        default: false
  chart_repo_url:
    description: A chart repository (C(https://), C(http://)) or OCI registry (C(oci://)) to install the charts from.
    type: str
  chart_repo_username:
    description: User name for the chart repository.
    type: str
  chart_repo_password:
    description: Password for the chart repository.
    type: str
  chart_version:
    description: The chart version to install from O(chart_repo_url).
    type: str
  state:
    description: V(present) installs or upgrades; V(absent) uninstalls.
    type: str
    choices: [present, absent]
    default: present
  binary_path:
    description: The helm binary; the first C(helm) on C(PATH) when not given.
    type: path
  wait:
    description:
      - Wait up to O(wait_timeout), so helm returns once the release's Deployments are ready (or gone). Helm 3 gets
        C(--wait); Helm 4, whose C(--wait) is a strategy, C(--wait=legacy) (Helm 3's readiness checks, which need no
        C(watch) rights; the watcher strategy would).
    type: bool
    default: true
  wait_timeout:
    description: Seconds helm waits.
    type: int
    default: 300
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: partial
    details:
      - The namespace is created as a server-side dry run. helm has no server-side dry run of an install, so the
        releases are predicted from what is in place; the API server does not validate their objects.
  diff_mode:
    support: full
    details: Shows each installed or upgraded release's values before and after.
  idempotent:
    support: full
    details: A release already deployed from the same chart and version with the same values is left alone.
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
  - helm >= 3.8 (3.13 with O(releases[].labels)), or Helm 4; the module reads C(helm version) to pick the flags
"""

EXAMPLES = r"""
- name: Install Istio's base and istiod charts from a local directory
  teg.istio.helm_releases:
    namespace: istio-system
    create_namespace: true
    releases:
      - {name: istio-base, chart: /srv/charts/base-1.31.4.tgz, values: {global: {istioNamespace: istio-system}}}
      - {name: istiod, chart: /srv/charts/istiod-1.31.4.tgz, values: {global: {istioNamespace: istio-system}}}

- name: Uninstall them
  teg.istio.helm_releases:
    namespace: istio-system
    state: absent
    releases: [{name: istiod}, {name: istio-base}]
"""

RETURN = r"""
releases:
  description:
    - Per release, what was done (C(installed), C(upgraded), C(unchanged), C(uninstalled), C(absent)) and, after a
      change, its revision, status and chart.
  returned: success
  type: dict
  sample: {istiod: {action: installed, revision: "1", status: deployed, chart: istiod-1.31.4}}
namespace_created:
  description: Whether O(namespace) was created.
  returned: when O(create_namespace) and O(state=present)
  type: bool
msg:
  description: What was done, or that everything was already as wanted.
  returned: always
  type: str
"""

from ansible_collections.teg.istio.plugins.module_utils._helm_releases import ARGUMENT_CONSTRAINTS, ARGUMENT_SPEC, run
from ansible_collections.teg.istio.plugins.module_utils._k8s_module import run_as_module


def main():
    run_as_module(ARGUMENT_SPEC, run, ARGUMENT_CONSTRAINTS)


if __name__ == "__main__":
    main()
