"""fetch_crds: the fallback that downloads the pinned upstream CRDs, verified by SHA-256. Served here
from a local mirror on 127.0.0.1 holding the real files of the CRD folder the launcher resolves
(localcp.crds_dir()), as TEG_ISTIO_CRDS_BASE_URL allows. The whole integration suite of one lane of
`make test` runs on CRDs fetched this way too (tests/localcp/crds_mirror.py, docs/local-control-plane.md)."""

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


@pytest.fixture
def mirror(tmp_path, crds):
    root = tmp_path / "mirror"
    shutil.copytree(crds, root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_pinned_file_is_fetched_and_verified(mirror, tmp_path, crds):
    _root, url = mirror
    target = tmp_path / "out"
    fetch_crds.fetch(target, url)
    for folder, name, _sha256, _url in fetch_crds.entries():
        assert (target / folder / name).read_bytes() == (crds / folder / name).read_bytes()


def test_a_tampered_file_is_refused_and_not_kept(mirror, tmp_path):
    root, url = mirror
    victim = root / "istio-1.29.6" / "crd-all.gen.yaml"
    victim.write_text(victim.read_text() + "\n# tampered\n")
    with pytest.raises(SystemExit, match=r"istio-1.29.6/crd-all.gen.yaml has SHA-256 .* expected"):
        fetch_crds.fetch(tmp_path / "out", url)
    assert not (tmp_path / "out" / "istio-1.29.6" / "crd-all.gen.yaml").exists()


def test_the_lock_covers_every_file_of_the_crd_folder(crds):
    locked = {(folder, name) for folder, name, _sha256, _url in fetch_crds.entries()}
    found = {(p.parent.name, p.name) for p in crds.glob("*/*.yaml")}
    assert locked == found


def test_a_missing_folder_falls_back_to_the_pinned_download(mirror, tmp_path, monkeypatch):
    _root, url = mirror
    monkeypatch.setenv("TEG_ISTIO_CRDS_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("TEG_ISTIO_CRDS_BASE_URL", url)
    monkeypatch.setenv("TEG_ISTIO_CRDS_DOWNLOAD_DIR", str(tmp_path / "download"))
    assert localcp.crds_dir() == tmp_path / "download"
    assert sorted(p.relative_to(tmp_path / "download").as_posix() for p in (tmp_path / "download").glob("*/*.yaml")) \
        == sorted(f"{folder}/{name}" for folder, name, _sha256, _url in fetch_crds.entries())
