# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check mode before Istio exists: site.yml --check on a cluster without Istio only predicts the
install (helm has no server-side dry run), so the Istio APIs are not served when the later roles
render their objects. This filter stands in the API versions the pinned Istio will serve and names the
kinds the API server cannot dry-run yet, so those roles report them as to be created instead of
failing or pretending they were validated."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible.errors import AnsibleFilterError

# Istio 1.22 promoted networking.istio.io and security.istio.io to v1 (platform notes D3).
_V1_FROM = (1, 22)
PENDING_KINDS = ["VirtualService", "PeerAuthentication"]


def _minor(version):
    try:
        parts = str(version).lstrip("v").split(".")
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise AnsibleFilterError("istio version %r is not of the form 1.29.6" % (version,))


def istio_pending_cluster(cluster, istio_pending, istio_version):
    """`cluster` (cluster_facts) as it will be once the predicted Istio install ran, with
    `pending_kinds`; unchanged when nothing is pending or the APIs are already served."""
    istio = (cluster or {}).get("istio") or {}
    if not istio_pending or istio.get("virtualservice_api_version"):
        return cluster
    version = "v1" if _minor(istio_version) >= _V1_FROM else "v1beta1"
    out = copy.deepcopy(cluster)
    out.setdefault("istio", {})
    out["istio"]["virtualservice_api_version"] = "networking.istio.io/" + version
    out["istio"]["peerauthentication_api_version"] = "security.istio.io/" + version
    out["pending_kinds"] = list(PENDING_KINDS)
    return out


class FilterModule(object):
    def filters(self):
        return {"istio_pending_cluster": istio_pending_cluster}
