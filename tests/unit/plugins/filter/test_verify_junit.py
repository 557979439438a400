"""The JUnit report of the verify checks (plugins/filter/verify_junit.py), parsed back as a JUnit reader would."""

from xml.etree import ElementTree

from ansible_collections.teg.istio.plugins.filter.verify_junit import verify_junit

XDS = ("Service envoy-gateway-system/envoy-gateway port 18000 (grpc) has appProtocol None, expected 'tls': rerun "
       "site.yml or the teg_istio_prep role")
RATELIMIT = "Service envoy-gateway-system/envoy-ratelimit port 8081 (http) has appProtocol None, expected 'tls' & <x>"


def test_one_testcase_per_check_and_a_failure_with_the_findings():
    checks = [{"name": "TEG prepared for the mesh", "findings": [XDS, RATELIMIT]},
              {"name": "mesh-wide mTLS mode", "findings": []}]
    root = ElementTree.fromstring(verify_junit(checks, "eu-prod").encode())
    suite = root.find("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("eu-prod", "2", "1")
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert list(cases) == ["TEG prepared for the mesh", "mesh-wide mTLS mode"]
    failure = cases["TEG prepared for the mesh"].find("failure")
    assert failure.get("message") == XDS + " | " + RATELIMIT
    assert failure.text.splitlines() == [XDS, RATELIMIT]
    assert cases["mesh-wide mTLS mode"].find("failure") is None


def test_all_passed_has_no_failure():
    root = ElementTree.fromstring(verify_junit([{"name": "TEG prepared for the mesh", "findings": []}], "x").encode())
    assert root.get("failures") == "0" and root.find(".//failure") is None
