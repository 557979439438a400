"""The one reader of version strings (names.minor_version, names.version_older) that the plans share: the sidecar
drain's Istio and Kubernetes minimums, and istio_install's in-place upgrade rules."""

import pytest

from ansible_collections.teg.istio.plugins.module_utils.names import minor_version, version_older


@pytest.mark.parametrize("text, version", [("1.29.6", (1, 29)), ("v1.34.4", (1, 34)), ("1.24-dev", (1, 24)),
                                           ("v1.33.1+k3s1", (1, 33)), ("", None), (None, None), ("latest", None)])
def test_versions_read_as_major_minor(text, version):
    assert minor_version(text) == version


@pytest.mark.parametrize("version, other, older", [
    ("1.29.6", "1.30.0", True), ("1.30.0", "1.29.6", False), ("1.29.6", "1.29.6", False),
    ("1.9.0", "1.10.0", True), ("1.30.0-beta.1", "1.30.0", True), ("1.30.0", "1.30.0-beta.1", False),
])
def test_versions_compare_by_number_and_a_pre_release_sorts_first(version, other, older):
    assert version_older(version, other) is older
