"""fetch_crds: how the launcher's CRD folder (localcp.crds_dir()) gets the pinned upstream CRDs of crds.lock: out of
Go modules by `go mod download` in the wrapper modules tests/localcp/gomod/crds* (verified against their go.sum),
the files the Go module proxy does not serve downloaded, every file verified by SHA-256. The downloads are served
here from a local mirror on 127.0.0.1 holding only those files (TEG_ISTIO_CRDS_BASE_URL), so every other file must
have come out of its Go module (in the module cache, which `go mod download` fills where it lacks them)."""

import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "localcp"))
import fetch_crds  # noqa: E402
import localcp  # noqa: E402


@pytest.fixture(scope="module")
def crds():
    return localcp.crds_dir()


def _downloaded():
    """(folder, file) of the lock's rows downloaded from a URL rather than taken out of a Go module."""
    return [(folder, name) for folder, name, _sha256, source in fetch_crds.entries()
            if not fetch_crds.go_source(source)]


@pytest.fixture
def mirror(tmp_path, crds):
    root = tmp_path / "mirror"
    for folder, name in _downloaded():
        (root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(crds / folder / name, root / folder / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_pinned_file_is_fetched_and_verified(mirror, tmp_path, crds):
    _root, url = mirror
    target = tmp_path / "out"
    fetch_crds.fetch(target, url)
    for folder, name, _sha256, _source in fetch_crds.entries():
        assert (target / folder / name).read_bytes() == (crds / folder / name).read_bytes()


def test_both_kinds_of_source_are_in_the_lock():
    """Guards the mirror above: were every file downloaded, the Go module path would go untested."""
    sources = [source for _folder, _name, _sha256, source in fetch_crds.entries()]
    assert any(fetch_crds.go_source(source) for source in sources)
    assert _downloaded()


def test_a_tampered_download_is_refused_and_not_kept(mirror, tmp_path):
    root, url = mirror
    folder, name = _downloaded()[0]
    victim = root / folder / name
    victim.write_text(victim.read_text() + "\n# tampered\n")
    with pytest.raises(SystemExit, match=rf"{folder}/{name} has SHA-256 .* expected"):
        fetch_crds.fetch(tmp_path / "out", url)
    assert not (tmp_path / "out" / folder / name).exists()


def test_a_module_that_does_not_match_go_sum_is_refused(mirror, tmp_path, monkeypatch):
    """The go command checks each CRD module against the wrapper's go.sum: a wrong hash there stops the fetch."""
    _root, url = mirror
    copy = tmp_path / "localcp"
    shutil.copytree(REPO / "tests" / "localcp" / "gomod", copy / "gomod")
    go_sum = copy / "gomod" / "crds" / "go.sum"
    lines = go_sum.read_text().splitlines()
    module, version, _hash = lines[0].split()
    wrong = f"{module} {version} h1:{'A' * 43}="
    go_sum.write_text("\n".join([wrong] + lines[1:]) + "\n")
    monkeypatch.setattr(fetch_crds, "HERE", copy)
    refused = rf"tests/localcp/gomod/crds failed: verifying {module}@{version}: checksum mismatch"
    with pytest.raises(SystemExit, match=refused):
        fetch_crds.fetch(tmp_path / "out", url)


def test_the_lock_covers_every_file_of_the_crd_folder(crds):
    locked = {(folder, name) for folder, name, _sha256, _source in fetch_crds.entries()}
    # Only the lock's folders: the flavours read no other (localcp.MATRIX names them), and the download folder is a
    # cache shared by worktrees whose locks pin other versions (istio-1.29.6 beside istio-1.31.4 while both exist).
    folders = {folder for folder, _name in locked}
    found = {(p.parent.name, p.name) for p in crds.glob("*/*.yaml") if p.parent.name in folders}
    assert locked == found


def test_a_file_the_lock_no_longer_names_is_removed(mirror, tmp_path):
    _root, url = mirror
    folder, _name = _downloaded()[0]
    stale = tmp_path / "out" / folder / "gatewayapi-crds.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("kind: CustomResourceDefinition\n")
    fetch_crds.fetch(tmp_path / "out", url)
    assert not stale.exists()


def test_without_a_crd_folder_the_launcher_fetches_the_lock(mirror, tmp_path, monkeypatch):
    _root, url = mirror
    monkeypatch.delenv("TEG_ISTIO_CRDS_DIR", raising=False)
    monkeypatch.setenv("TEG_ISTIO_CRDS_BASE_URL", url)
    monkeypatch.setenv("TEG_ISTIO_CRDS_DOWNLOAD_DIR", str(tmp_path / "download"))
    assert localcp.crds_dir() == tmp_path / "download"
    assert sorted(p.relative_to(tmp_path / "download").as_posix() for p in (tmp_path / "download").glob("*/*.yaml")) \
        == sorted(f"{folder}/{name}" for folder, name, _sha256, _source in fetch_crds.entries())


def test_a_crd_folder_that_does_not_exist_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TEG_ISTIO_CRDS_DIR", str(tmp_path / "absent"))
    with pytest.raises(localcp.LocalcpError, match=r"TEG_ISTIO_CRDS_DIR=.*absent is not a folder"):
        localcp.crds_dir()
