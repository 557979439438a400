"""with_predictions (module_utils/_expose_app/plan.py): in check mode, and when site.yml plans every role
before the first write, expose_app renders for the Istio a predicted install brings and the GatewayClass
reference teg_istio_prep will set, and keeps the kinds not served yet out of the dry run."""

from ansible_collections.teg.istio.plugins.module_utils._expose_app.plan import with_predictions
from ansible_collections.teg.istio.plugins.module_utils._istio_install.decisions import predicted_apis

import pytest

BARE = {"istio": {"virtualservice_api_version": None, "peerauthentication_api_version": None, "istiod": None},
        "gatewayclass": {"name": "teg", "parameters_ref": None, "envoyproxy": None}}


@pytest.mark.parametrize("version, api", [("1.29.6", "v1"), ("1.22.0", "v1"), ("1.21.9", "v1beta1"), ("1.19.10", "v1beta1")])
def test_the_pinned_version_decides_the_api(version, api):
    out = with_predictions(BARE, {"istio": predicted_apis(version)})
    assert out["istio"]["virtualservice_api_version"] == "networking.istio.io/" + api
    assert out["istio"]["peerauthentication_api_version"] == "security.istio.io/" + api
    assert out["pending_kinds"] == ["VirtualService"]
    assert BARE["istio"]["virtualservice_api_version"] is None  # the input is not modified


def test_nothing_predicted_or_already_served_leaves_the_facts_alone():
    assert with_predictions(BARE, {})["pending_kinds"] == []
    served = dict(BARE, istio={"virtualservice_api_version": "networking.istio.io/v1"})
    out = with_predictions(served, {"istio": predicted_apis("1.19.10")})
    assert out["istio"]["virtualservice_api_version"] == "networking.istio.io/v1" and out["pending_kinds"] == []


def test_a_reference_teg_istio_prep_sets_is_taken_and_its_envoyproxy_is_pending():
    ref = {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "data-plane-sidecars", "namespace": "eg"}
    out = with_predictions(BARE, {"gatewayclass": {"name": "teg", "parameters_ref": ref}})
    assert out["gatewayclass"]["parameters_ref"] == ref and out["envoyproxy_pending"] is True
    other = with_predictions(BARE, {"gatewayclass": {"name": "other", "parameters_ref": ref}})
    assert other["gatewayclass"]["parameters_ref"] is None
