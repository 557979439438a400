#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: run_lock
short_description: Hold, renew or release the cluster's run lock, a coordination.k8s.io/v1 Lease
version_added: 0.2.0
description:
  - Keeps two runs of this collection's playbooks on one cluster from interleaving their writes (two AWX jobs, or
    a fleet run overlapping a single one). The lock is a C(coordination.k8s.io/v1) Lease, the API object Kubernetes'
    own leader election uses; its C(holderIdentity) names the run (RV(identity)).
  - O(state=held) without O(identity) acquires the lock. A missing Lease is created; a Lease whose lease expired
    (its C(renewTime) plus C(leaseDurationSeconds) is past, as a killed run leaves it) is taken over; a Lease that
    another run holds is read again every O(wait_sleep) seconds for up to O(wait_timeout) seconds, then the module
    fails in one line naming the holder (the AWX job, else user@host and the pid of C(ansible-playbook)).
  - A Lease held by an C(ansible-playbook) of this machine that no longer runs (interrupted, or failed while the API
    server was away so that it could not release) is taken over at once. The pid is looked up only on the machine
    and in the pid namespace that wrote it (a hash of the host name, boot id and pid namespace, in the identity);
    an AWX job's Lease is taken over only once its lease expired.
  - Every write carries the resourceVersion that was read (a create fails on an existing Lease), so when two runs
    race for the Lease exactly one wins and the other reads again.
  - O(state=held) with the O(identity) an acquisition returned renews the lease for O(lease_seconds); it fails in
    one line when another run holds the Lease by then (this run's lease expired between two renewals).
  - O(state=awaited) only reads. It waits, as an acquisition does, while another run holds the Lease, writes nothing,
    and returns the Lease's resourceVersion (RV(observed)). The playbooks plan after it and take the lock only when
    a step has something to write, or when RV(observed) changed while they planned (another run took or released
    the lock meanwhile), so that a run with nothing to do writes nothing, not even the Lease.
  - O(state=released) deletes the Lease when O(identity) holds it, with its resourceVersion as a precondition;
    another run's Lease is left alone. A release that fails (the API server gone) warns and does not fail, since it runs
    last, after the failure that is the run's one line.
author:
  - teg.istio maintainers (@teg-istio)
options:
  state:
    description:
      - V(held) acquires (or, with O(identity), renews) the lock; V(released) releases it; V(awaited) waits while
        another run holds it and writes nothing.
    type: str
    choices: [held, released, awaited]
    default: held
  name:
    description: The Lease's name.
    type: str
    default: teg-istio-run
  namespace:
    description:
      - The Lease's namespace. C(kube-system) exists on every cluster whatever the playbooks' variables, so every run
        on one cluster finds the same Lease.
    type: str
    default: kube-system
  identity:
    description:
      - The RV(identity) that the acquisition of this run returned; with it, O(state=held) renews and
        O(state=released) releases. Required with O(state=released).
    type: str
  job_id:
    description:
      - The AWX (or Tower) job that runs the playbook, named in the Lease's holder (the playbooks pass
        C(awx_job_id), else C(tower_job_id), the extra variables AWX sets).
    type: str
  lease_seconds:
    description:
      - How long the lease lasts after each acquisition or renewal. Keep it above the longest time between two
        renewals (the playbooks renew at each step); a run killed without releasing holds the lock this long.
    type: int
    default: 900
  wait_timeout:
    description: Seconds to wait for another run's Lease before failing; V(0) fails at once.
    type: int
    default: 600
  wait_sleep:
    description: Seconds between two reads of the Lease while waiting.
    type: int
    default: 5
  controller:
    description:
      - C(user), C(host), C(pid) and C(place) of the run's C(ansible-playbook). Set by the module's action plugin
        (the parent of the worker that runs the task); leave it unset.
    type: dict
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: full
    details: Takes, renews and releases nothing and waits for nothing; reads the Lease and says who holds it.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Each acquisition or renewal writes a new C(renewTime); O(state=awaited) and a release of a Lease not held
      change nothing.
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
seealso:
  - name: Leases (Kubernetes documentation)
    description: The coordination.k8s.io/v1 Lease and its use for leader election.
    link: https://kubernetes.io/docs/concepts/architecture/leases/
"""

EXAMPLES = r"""
- name: Wait while another run holds the lock, writing nothing
  teg.istio.run_lock:
    state: awaited
  register: __awaited

- name: Take the run lock, waiting up to 10 minutes for another run
  teg.istio.run_lock:
    job_id: "{{ awx_job_id | default(tower_job_id) | default(omit) }}"
    wait_timeout: 600
  register: __lock

- name: Renew it between two long steps
  teg.istio.run_lock:
    identity: "{{ __lock.identity }}"

- name: Release it
  teg.istio.run_lock:
    state: released
    identity: "{{ __lock.identity }}"
"""

RETURN = r"""
identity:
  description: The Lease's C(holderIdentity) for this run, to pass as O(identity) to renew and release.
  returned: always
  type: str
  sample: "AWX job 4242 (run 9f2c01ab)"
acquisition:
  description: What the acquisition did, V(create), V(take) (over an expired lease) or V(renew).
  returned: when the lock was acquired
  type: str
  sample: take
previous_holder:
  description: The run this one waited for or took over from; null when none.
  returned: when the lock was acquired, and with O(state=awaited)
  type: str
  sample: "runner@awx-node-1 pid 4711"
observed:
  description: The Lease's C(metadata.resourceVersion) as last read; null when there is no Lease.
  returned: with O(state=awaited), and in check mode
  type: str
  sample: "48213"
waited:
  description: Seconds this run waited for the lock.
  returned: when the lock was acquired, and with O(state=awaited)
  type: int
  sample: 0
holder:
  description: The run that holds the lock, when the module failed waiting for it.
  returned: on failure to acquire
  type: str
msg:
  description: A one-line summary.
  returned: always
  type: str
  sample: "holds kube-system/teg-istio-run"
"""

from ansible_collections.teg.istio.plugins.module_utils._run_lock import ARGUMENT_CONSTRAINTS, ARGUMENT_SPEC, run
from ansible_collections.teg.istio.plugins.module_utils._k8s_module import run_as_module


def main():
    run_as_module(ARGUMENT_SPEC, run, ARGUMENT_CONSTRAINTS)


if __name__ == "__main__":
    main()
