"""istio_pending_cluster: check mode renders for the Istio a predicted install will bring."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.teg.istio.plugins.filter.istio_pending import istio_pending_cluster

BARE = {"istio": {"virtualservice_api_version": None, "peerauthentication_api_version": None, "istiod": None}}


@pytest.mark.parametrize("version, api", [("1.29.6", "v1"), ("1.22.0", "v1"), ("1.21.9", "v1beta1"), ("1.19.10", "v1beta1")])
def test_the_pinned_version_decides_the_api(version, api):
    out = istio_pending_cluster(BARE, True, version)
    assert out["istio"]["virtualservice_api_version"] == "networking.istio.io/" + api
    assert out["istio"]["peerauthentication_api_version"] == "security.istio.io/" + api
    assert out["pending_kinds"] == ["VirtualService", "PeerAuthentication"]
    assert BARE["istio"]["virtualservice_api_version"] is None  # the input is not modified


def test_nothing_pending_or_already_served_leaves_the_facts_alone():
    assert istio_pending_cluster(BARE, False, "1.29.6") is BARE
    served = {"istio": {"virtualservice_api_version": "networking.istio.io/v1"}}
    assert istio_pending_cluster(served, True, "1.29.6") is served


def test_a_bad_version_is_a_clear_error():
    with pytest.raises(AnsibleFilterError, match="not of the form"):
        istio_pending_cluster(BARE, True, "latest")
