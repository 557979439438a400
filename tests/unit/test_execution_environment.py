"""The execution environment definitions: `ansible-builder create` renders a build context from
execution-environment.yml offline (no image is built here: docs/awx.md says why), and ansible-builder's
introspection finds teg.istio's own Python dependencies through meta/execution-environment.yml."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The image ships the legacy lane's Helm 3 (docs/awx.md: the checksums of its release archives are the ones pinned).
HELM_VERSION = re.search(r"^LEGACY_HELM_VERSION=(\S+)$", (REPO / "tests/localcp/versions.env").read_text(), re.M).group(1)


def _builder(*args, cwd=REPO):
    pytest.importorskip("ansible_builder", reason="ansible-builder comes with requirements-dev.txt (make venv)")
    proc = subprocess.run([sys.executable, "-m", "ansible_builder", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _requirement_names(text):
    return {re.split(r"[<>=!~\s\[;#]", line.strip(), maxsplit=1)[0].lower()
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    out = tmp_path_factory.mktemp("ee-context")
    _builder("create", "-f", "execution-environment.yml", "-c", str(out), "--output-filename", "Containerfile")
    return out


def test_python_requirements_reach_the_build(context):
    ours = (REPO / "meta/ee-requirements.txt").read_text()
    assert {"kubernetes", "jsonpatch", "pyyaml"} <= _requirement_names(ours)
    assert (context / "_build/requirements.txt").read_text() == ours
    containerfile = (context / "Containerfile").read_text()
    assert "COPY _build/requirements.txt requirements.txt" in containerfile
    assert "--user-pip=requirements.txt" in containerfile


def test_kubernetes_core_is_the_version_the_tests_run():
    definition = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    from ansible_collections.kubernetes import core  # the `ansible` bundle's copy, which the tests use
    manifest = yaml.safe_load((Path(core.__file__).parent / "MANIFEST.json").read_text())
    pinned = {c["name"]: c["version"] for c in definition["dependencies"]["galaxy"]["collections"]}
    assert pinned == {"kubernetes.core": manifest["collection_info"]["version"]}
    requirements = yaml.safe_load((REPO / "collections/requirements.yml").read_text())
    assert {"name": "kubernetes.core", "version": manifest["collection_info"]["version"]} in requirements["collections"]


def test_helm_is_installed_pinned_and_checked(context):
    containerfile = (context / "Containerfile").read_text()
    final = containerfile.split("FROM base AS final", 1)[1]
    assert f"ARG HELM_VERSION={HELM_VERSION}" in final
    sums = dict(re.findall(r"ARG HELM_SHA256_(\w+)=([0-9a-f]+)", final))
    assert set(sums) == {"AMD64", "ARM64"} and all(len(s) == 64 for s in sums.values())
    run = next(line for line in final.splitlines() if "get.helm.sh" in line)
    # The download is checked before it is unpacked, and helm ends up on the PATH of the final image.
    assert run.index("sha256sum --check") < run.index("tar -x") < run.index("/usr/local/bin/helm")
    assert final.index("get.helm.sh") < final.index("USER 1000")


def test_introspection_finds_the_collections_own_dependencies(tmp_path):
    collection = tmp_path / "ansible_collections" / "teg" / "istio"
    collection.parent.mkdir(parents=True)
    collection.symlink_to(REPO)
    found = yaml.safe_load(_builder("introspect", "--sanitize", str(tmp_path)).split("\n", 1)[1])
    from_us = {line.split("#")[0].strip() for line in found["python"] if line.endswith("# from collection teg.istio")}
    # PyYAML is left out by ansible-builder on purpose: ansible-core brings it.
    assert _requirement_names("\n".join(from_us)) == _requirement_names(
        (REPO / "meta/ee-requirements.txt").read_text()) - {"pyyaml"}
