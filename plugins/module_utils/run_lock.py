# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run lock's rules, without a client: who holds the cluster's coordination.k8s.io/v1 Lease, whether its lease
has expired, and what a run does about it (create, take over, renew, wait, give up). Pure, so that the unit tests
check every case; the module _run_lock.py reads and writes the Lease (docs/architecture.md, "The run lock")."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re

# The Lease's MicroTime, as Kubernetes writes it (RFC 3339 with microseconds).
_MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def holder_identity(job_id, user, host, pid, token, place):
    """What the Lease's holderIdentity says: the AWX job where AWX runs the playbook (its awx_job_id or
    tower_job_id), else user@host and the pid of ansible-playbook; `token` (random per run) tells two runs of one
    job or process apart; `place` (process_place) tells where that pid can be looked up."""
    if job_id:
        return "AWX job %s (run %s)" % (job_id, token)
    return "%s@%s pid %s (run %s in %s)" % (user, host, pid, token, place)


_PROCESS = re.compile(r"^.+@\S+ pid (?P<pid>\d+) \(run \S+ in (?P<place>\S+)\)$")


def holder_process(identity):
    """(pid, place) of the ansible-playbook that holds a Lease, when its identity names one (not an AWX job's: AWX
    runs each job in a container of its own, whose processes no other run can see); else None."""
    match = _PROCESS.match(identity or "")
    return (int(match.group("pid")), match.group("place")) if match else None


def holder_name(identity):
    """The operator's part of a holderIdentity: without the run token."""
    return (identity or "").split(" (run ", 1)[0] or "an unnamed holder"


def format_time(moment):
    return moment.strftime(_MICRO_TIME)


def parse_time(value):
    """A Lease MicroTime (with or without fraction) as an aware UTC datetime; None when absent or unreadable."""
    if not value:
        return None
    for pattern in (_MICRO_TIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.datetime.strptime(value, pattern).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
    return None


def expires_at(spec):
    """When the lease of a Lease's spec runs out: its last renewal (else acquisition) plus leaseDurationSeconds; None
    when the Lease has neither time or no duration (then it counts as expired: nobody can be renewing it)."""
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    if renewed is None or not duration:
        return None
    return renewed + datetime.timedelta(seconds=int(duration))


def decide(lease, identity, now, holder_gone=False):
    """What a run whose holderIdentity is `identity` does with the Lease as read (`lease` a dict, None when absent) at
    `now`, when it wants to hold it: one of
      create  no Lease: create it (a conflict means another run was faster: read again);
      renew   this run holds it: renew it;
      take    another run held it and its lease expired (a killed run), or `holder_gone` (its ansible-playbook, on
              this machine, no longer runs: interrupted, or failed while the API server was away): take it over;
      wait    another run holds it and its lease runs: wait, or give up naming the holder.
    Both writes carry the Lease's resourceVersion, so two runs that decide "take" at once cannot both win."""
    if lease is None:
        return "create"
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    if holder == identity:
        return "renew"
    end = expires_at(spec)
    if not holder or end is None or end <= now or holder_gone:
        return "take"
    return "wait"


def lease_spec(identity, lease_seconds, now, previous=None):
    """The spec this run writes: a new holding (acquireTime now, one more transition when it takes over), or a
    renewal of its own (acquireTime kept)."""
    previous = previous or {}
    ours = previous.get("holderIdentity") == identity
    transitions = int(previous.get("leaseTransitions") or 0)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": int(lease_seconds),
        "acquireTime": previous.get("acquireTime") if ours and previous.get("acquireTime") else format_time(now),
        "renewTime": format_time(now),
        "leaseTransitions": transitions if ours or not previous else transitions + 1,
    }


def describe_holding(lease_ref, spec):
    """'<lease> is held by <holder> since <acquired>, its lease running until <end>'."""
    end = expires_at(spec)
    return "%s is held by %s since %s, its lease running until %s" % (
        lease_ref, holder_name(spec.get("holderIdentity")), spec.get("acquireTime") or "an unknown time",
        format_time(end) if end else "an unknown time")


def refusal(lease_ref, spec, waited, wait_variable, lease_variable):
    """The one line a run that gave up waiting fails with: the holder and the ways out."""
    return ("%s: another run of teg.istio is working on this cluster (waited %ds): wait for it to finish and run "
            "again, or raise %s; if that run is gone, its lease expires by itself (%s sets how long), or delete "
            "the Lease (kubectl delete lease -n %s %s)"
            % (describe_holding(lease_ref, spec), waited, wait_variable, lease_variable,
               *lease_ref.split("/", 1)))


def lost(lease_ref, spec, lease_variable):
    """The one line a run fails with when, at a renewal, another run holds the Lease: its own lease expired between
    two renewals (a step longer than the lease) and it was taken over; stopping keeps the two from interleaving."""
    return ("this run lost the run lock: %s; this run's lease expired between two steps and the other run took it "
            "over, so this run stops: raise %s above the longest step (istio_install_wait_timeout, "
            "teg_restart_wait_timeout) and run again" % (describe_holding(lease_ref, spec), lease_variable))
