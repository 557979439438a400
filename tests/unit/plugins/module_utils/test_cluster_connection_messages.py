"""The one-line connection messages (plugins/module_utils/cluster.py) name what the user set: on a fleet host
(README.md, "Many clusters") the host variable behind a connection option (teg_istio_kubeconfig, teg_istio_host,
...), else K8S_AUTH_* as for a single cluster. tests/integration/test_fleet.py sees it on a stopped API server."""

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import api_exception
from urllib3.exceptions import MaxRetryError, NewConnectionError

from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    ConnectionSettingsError, TegIstioError, api_error_message, api_errors, connection_error_message,
    connection_variables)

REFUSED = MaxRetryError(None, "/version", reason=NewConnectionError(None, "[Errno 111] Connection refused"))
NO_FILE = Exception("Could not create API client: Invalid kube-config file. No configuration found.")
HOST_VARS = {"teg_istio_kubeconfig": "/x", "teg_istio_context": "west", "teg_istio_host": "https://h:6443",
             "teg_istio_api_key": "t", "inventory_hostname": "west"}


def _api_error(status, message):
    """What the Kubernetes client raises for an HTTP error status (kubernetes.dynamic's own mapping)."""
    error = ApiException(status=status, reason=message)
    error.body = '{"message": "%s"}' % message
    return api_exception(error)


def unauthorized():
    return _api_error(401, "Unauthorized")


def test_only_options_that_are_set_and_came_from_a_host_variable_are_named():
    params = {"kubeconfig": "/x", "context": None, "host": "", "api_key": "t", "ca_cert": None}
    assert connection_variables(params, HOST_VARS) == {"kubeconfig": "teg_istio_kubeconfig",
                                                       "api_key": "teg_istio_api_key"}
    # An option set by the play or the task, with no such host variable: nothing to name.
    assert connection_variables(params, {"inventory_hostname": "localhost"}) == {}


@pytest.mark.parametrize("params, expected", [
    ({"kubeconfig": "/fleet/north.kubeconfig"},
     "check the server address in teg_istio_kubeconfig (/fleet/north.kubeconfig) and that the API server is running"),
    ({"kubeconfig": "/fleet/all.kubeconfig", "context": "west"},
     "check the server address in teg_istio_kubeconfig (/fleet/all.kubeconfig) (context west, teg_istio_context)"),
    ({"host": "https://10.0.0.1:6443", "api_key": "t"}, "check teg_istio_host (https://10.0.0.1:6443)"),
], ids=["kubeconfig", "kubeconfig-context", "host"])
def test_an_unreachable_fleet_cluster_names_the_host_variable(params, expected):
    variables = connection_variables(params, HOST_VARS)
    msg = api_error_message(REFUSED, "read", "its version and API groups", params, variables)
    assert msg.startswith("cannot reach the Kubernetes API server to read its version and API groups: "), msg
    assert expected in msg and "K8S_AUTH" not in msg and "\n" not in msg, msg


def test_an_unreachable_single_cluster_still_names_k8s_auth():
    msg = api_error_message(REFUSED, "read", "its version and API groups", {"kubeconfig": "/k"}, {})
    assert "check K8S_AUTH_HOST / the kubeconfig server address and that the API server is running" in msg, msg
    assert api_error_message(REFUSED, "read", "x") == msg.replace("its version and API groups", "x")


def test_a_rejected_token_names_the_host_variable_that_carried_it():
    variables = connection_variables({"host": "https://h", "api_key": "t"}, HOST_VARS)
    msg = api_error_message(unauthorized(), "read", "x", {"host": "https://h", "api_key": "t"}, variables)
    assert msg.endswith("check the token or client certificate in teg_istio_api_key / the kubeconfig"), msg
    assert api_error_message(unauthorized(), "read", "x").endswith("in K8S_AUTH_API_KEY / the kubeconfig")


def test_a_missing_kubeconfig_of_a_fleet_host_names_teg_istio_kubeconfig():
    params = {"kubeconfig": "/nonexistent/north"}
    msg = connection_error_message(NO_FILE, params, connection_variables(params, HOST_VARS))
    assert msg == ("no Kubernetes connection settings: kubeconfig /nonexistent/north (from teg_istio_kubeconfig) does "
                   "not exist or is empty; set teg_istio_kubeconfig to a kubeconfig file, or teg_istio_host with "
                   "teg_istio_api_key"), msg
    single = connection_error_message(NO_FILE, params)
    assert "(from the kubeconfig option)" in single and "set K8S_AUTH_KUBECONFIG (or KUBECONFIG)" in single, single


def test_a_context_a_fleet_host_s_kubeconfig_lacks_names_teg_istio_context(tmp_path):
    kubeconfig = tmp_path / "k"
    kubeconfig.write_text("contexts: [{name: east}, {name: west}]\n")
    params = {"kubeconfig": str(kubeconfig), "context": "south"}
    exc = Exception("Could not create API client: Expected object with name south in kubeconfig contexts list")
    msg = connection_error_message(exc, params, connection_variables(params, HOST_VARS))
    assert msg.startswith("context south is not in kubeconfig %s (from teg_istio_kubeconfig): set teg_istio_context "
                          "to one of its contexts (east, west)" % kubeconfig), msg


def forbidden():
    return _api_error(403, "services is forbidden")


def test_a_connection_failure_anywhere_in_a_module_is_worded_again_for_the_host_variables():
    """Any API request of a module (not only the client's first) can find the server gone: api_errors raises
    ConnectionSettingsError, which the in-process runner words again with the host's variables."""
    params = {"host": "https://10.0.0.1:6443", "api_key": "t"}
    with pytest.raises(ConnectionSettingsError) as failed:
        with api_errors("discover", "the API groups"):
            raise REFUSED
    assert "check K8S_AUTH_HOST" in str(failed.value)
    msg = failed.value.message_for(params, connection_variables(params, HOST_VARS))
    assert msg.startswith("cannot reach the Kubernetes API server to discover the API groups: ")
    assert "check teg_istio_host (https://10.0.0.1:6443)" in msg and "K8S_AUTH" not in msg, msg
    with pytest.raises(ConnectionSettingsError):
        with api_errors("read", "x"):
            raise unauthorized()
    # Other API errors are about the object, not the connection: a plain TegIstioError, as before.
    with pytest.raises(TegIstioError) as refused:
        with api_errors("patch", "Service a/b"):
            raise forbidden()
    assert not isinstance(refused.value, ConnectionSettingsError)
    assert str(refused.value).startswith("forbidden (403) to patch Service a/b: services is forbidden")
