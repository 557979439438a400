# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module run_lock, run in-process by its action plugin or as a module process
(module_utils/_k8s_module.py). Reads and writes the run lock's Lease; what it does is decided by run_lock.py. It can
change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import getpass
import hashlib
import os
import socket
import time
import uuid

try:
    from kubernetes.dynamic.exceptions import ConflictError
except ImportError:  # reported by AnsibleK8SModule's own dependency check
    ConflictError = Exception

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.teg.istio.plugins.module_utils.cluster import TegIstioError, api_errors, connect, get_or_none
from ansible_collections.teg.istio.plugins.module_utils.names import describe
from ansible_collections.teg.istio.plugins.module_utils import run_lock


ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(
    state=dict(type="str", choices=["held", "released", "awaited"], default="held"),
    name=dict(type="str", default="teg-istio-run"),
    namespace=dict(type="str", default="kube-system"),
    identity=dict(type="str"),
    job_id=dict(type="str"),
    lease_seconds=dict(type="int", default=900),
    wait_timeout=dict(type="int", default=600),
    wait_sleep=dict(type="int", default=5),
    controller=dict(type="dict"),
)
ARGUMENT_CONSTRAINTS = dict(required_if=[("state", "released", ("identity",))])

_API_VERSION = "coordination.k8s.io/v1"
# The role's variables behind the options, named by the one-line failures.
_WAIT_VARIABLE = "run_lock_wait_timeout"
_LEASE_VARIABLE = "run_lock_lease_seconds"


def controller_user():
    """The controller's user name; its uid where the environment and the password database have none (a container
    running under an arbitrary uid)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "uid %d" % os.getuid()


def process_place():
    """Where a pid means one process: this machine (its boot), its pid namespace and host name, hashed short. A
    holder's pid is looked up only where the place is the same (a container of its own has another namespace)."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            parts.append(boot.read().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:  # not Linux: the host name alone
        pass
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def controller_process(pid):
    """user, host, pid and place of the run's ansible-playbook, `pid` its process id."""
    return dict(user=controller_user(), host=socket.gethostname(), pid=pid, place=process_place())


def _holder_gone(identity):
    """True when the Lease's holder is an ansible-playbook of this place that no longer runs."""
    process = run_lock.holder_process(identity)
    if process is None or process[1] != process_place():
        return False
    try:
        os.kill(process[0], 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: it runs
        return False
    return False


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class _Lease(object):
    """The Lease named by the module's parameters: read, create, replace (with the resourceVersion read) and delete
    (with it as a precondition). A write that lost a race returns None."""

    def __init__(self, client, params):
        self.client, self.name, self.namespace = client, params["name"], params["namespace"]
        self.ref = "%s/%s" % (self.namespace, self.name)
        self.what = describe("Lease", self.name, self.namespace)
        with api_errors("read", "the Lease API (%s)" % _API_VERSION):
            self.resource = client.resource("Lease", _API_VERSION)

    def read(self):
        with api_errors("read", self.what):
            return get_or_none(self.client, _API_VERSION, "Lease", self.name, self.namespace)

    def write(self, current, spec):
        body = {"apiVersion": _API_VERSION, "kind": "Lease", "spec": spec,
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "teg.istio"}}}
        try:
            with api_errors("create" if current is None else "update", self.what):
                if current is None:
                    return self.client.create(self.resource, body, namespace=self.namespace).to_dict()
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                return self.client.replace(self.resource, body, name=self.name, namespace=self.namespace).to_dict()
        except TegIstioError as exc:
            if isinstance(exc.__cause__, ConflictError):
                return None
            raise

    def delete(self, current):
        preconditions = {"resourceVersion": current["metadata"]["resourceVersion"]}
        try:
            with api_errors("delete", self.what):
                self.client.delete(self.resource, name=self.name, namespace=self.namespace,
                                   body={"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": preconditions})
        except TegIstioError as exc:
            if isinstance(exc.__cause__, ConflictError):
                return False
            raise
        return True


def _read_until_free(lease, params, identity, started):
    """Read the Lease until `identity` (None: a run that only waits) need not wait for another run's lease: a dict
    of the Lease as read (`current`, None when absent), its `spec`, whether its holder's process is `gone`, the
    `action` run_lock.decide chose, when it was read (`now`), and the holder waited for last (`waited_for`, None
    when none). Fails in one line naming the holder once wait_timeout seconds have passed since `started`."""
    waited_for = None
    while True:
        current = lease.read()
        now = _now()
        spec = (current or {}).get("spec") or {}
        gone = bool(spec) and _holder_gone(spec.get("holderIdentity"))
        action = run_lock.decide(current, identity, now, gone)
        if action != "wait":
            return dict(current=current, spec=spec, gone=gone, action=action, now=now, waited_for=waited_for)
        waited = time.monotonic() - started
        if waited >= params["wait_timeout"]:
            raise TegIstioError(run_lock.refusal(lease.ref, spec, waited, _WAIT_VARIABLE, _LEASE_VARIABLE),
                                result=dict(holder=run_lock.holder_name(spec.get("holderIdentity"))))
        waited_for = spec.get("holderIdentity")
        time.sleep(max(1, min(params["wait_sleep"], params["wait_timeout"] - waited)))


def _acquire(lease, params, identity):
    """Hold the Lease for `identity`: create it, take it over once its lease expired, or renew it; waits up to
    wait_timeout for another run's lease, then fails in one line naming the holder."""
    started = time.monotonic()
    previous_holder = None
    while True:
        free = _read_until_free(lease, params, identity, started)
        previous_holder = free["waited_for"] or previous_holder
        spec = free["spec"]
        written = lease.write(free["current"], run_lock.lease_spec(identity, params["lease_seconds"], free["now"],
                                                                   spec or None))
        if written is None:  # another run wrote the Lease between the read and the write: decide again
            continue
        waited = int(time.monotonic() - started)
        if free["action"] == "take":
            previous_holder = spec.get("holderIdentity")
        return dict(action=free["action"], waited=waited, lease=written, gone=free["gone"],
                    previous_holder=run_lock.holder_name(previous_holder) if previous_holder else None)


def _await(lease, params):
    """Wait while another run holds the Lease, reading only: a run with nothing to write takes no lock, but plans
    on a cluster no other run is writing. Fails in one line naming the holder after wait_timeout, as an acquisition
    does. The Lease's resourceVersion as last read (None: no Lease) tells a later read whether any run took or
    released the lock in between."""
    started = time.monotonic()
    free = _read_until_free(lease, params, None, started)
    waited = int(time.monotonic() - started)
    current, spec, waited_for = free["current"], free["spec"], free["waited_for"]
    state = "%s is free" % lease.ref if current is None or not spec.get("holderIdentity") else \
        "%s is free: %s" % (lease.ref, "its holder no longer runs" if free["gone"] else "its lease expired")
    previous_holder = run_lock.holder_name(waited_for) if waited_for else None
    return dict(changed=False, observed=(current or {}).get("metadata", {}).get("resourceVersion"), waited=waited,
                previous_holder=previous_holder,
                msg=state + (" after waiting %ds for %s" % (waited, previous_holder) if previous_holder else ""))


def _acquire_message(lease, outcome):
    if outcome["action"] == "take":
        return "took over %s from %s, %s (waited %ds)" % (
            lease.ref, outcome["previous_holder"],
            "which no longer runs" if outcome["gone"] else "whose lease had expired", outcome["waited"])
    if outcome["action"] == "renew":
        return "renewed %s" % lease.ref
    waited = " after waiting %ds for %s" % (outcome["waited"], outcome["previous_holder"]) \
        if outcome["previous_holder"] else ""
    return "holds %s%s" % (lease.ref, waited)


def _renew(lease, params, identity):
    """Renew this run's holding; fails in one line when another run holds the Lease (this run's lease expired
    and it was taken over) or when nobody does (deleted by hand)."""
    for _attempt in range(3):
        current = lease.read()
        spec = (current or {}).get("spec") or {}
        if current is None or spec.get("holderIdentity") != identity:
            raise TegIstioError(run_lock.lost(lease.ref, spec, _LEASE_VARIABLE) if current is not None else
                                "this run lost the run lock: %s was deleted while this run held it; so that two runs "
                                "never interleave, this run stops: run again" % lease.what)
        written = lease.write(current, run_lock.lease_spec(identity, params["lease_seconds"], _now(), spec))
        if written is not None:
            return written
    raise TegIstioError("%s changed under every renewal of this run: check what else writes it" % lease.what)


def _release(lease, identity):
    """Delete the Lease when this run holds it (with its resourceVersion as a precondition); another holder's is
    left alone."""
    current = lease.read()
    holder = ((current or {}).get("spec") or {}).get("holderIdentity")
    if current is None or holder != identity:
        return dict(changed=False, msg="%s is not held by this run (%s); left alone"
                    % (lease.ref, "absent" if current is None else "held by " + run_lock.holder_name(holder)))
    if not lease.delete(current):
        return _release(lease, identity)
    return dict(changed=True, msg="released %s" % lease.ref)


def run_with_client(module, client):
    params = module.params
    lease = _Lease(client, params)
    identity = params["identity"]
    if module.check_mode:
        # A check-mode run writes nothing, so it takes no lock and waits for none: it only says who holds it.
        current = lease.read()
        spec = (current or {}).get("spec") or {}
        state = run_lock.describe_holding(lease.ref, spec) if current else "%s is free" % lease.ref
        return dict(changed=False, identity=identity, observed=(current or {}).get("metadata", {}).get("resourceVersion"),
                    msg="check mode takes no run lock; " + state)
    if params["state"] == "awaited":
        return _await(lease, params)
    if params["state"] == "released":
        try:
            return dict(_release(lease, identity), identity=identity)
        except TegIstioError as exc:
            # A release runs last, in the playbooks' always section, often after the failure that is the run's one
            # line (the API server gone): it warns instead. The Lease left is taken over by the next run on this
            # machine at once (this ansible-playbook no longer runs), by any other once its lease expired.
            module.warn("the run lock was not released: %s" % exc)
            return dict(changed=False, identity=identity, msg="not released: %s" % exc)
    if identity:
        written = _renew(lease, params, identity)
        return dict(changed=True, identity=identity, msg="renewed %s until %s" % (
            lease.ref, run_lock.format_time(run_lock.expires_at(written["spec"]))))
    # The action plugin names ansible-playbook's process (the parent of the worker it runs in); a module process
    # run without it names its own parent.
    controller = params["controller"] or controller_process(os.getppid())
    identity = run_lock.holder_identity(params["job_id"], controller["user"], controller["host"], controller["pid"],
                                        uuid.uuid4().hex[:8], controller["place"])
    outcome = _acquire(lease, params, identity)
    return dict(changed=True, identity=identity, waited=outcome["waited"], previous_holder=outcome["previous_holder"],
                acquisition=outcome["action"], msg=_acquire_message(lease, outcome))


def run(module):
    return run_with_client(module, connect(module))
