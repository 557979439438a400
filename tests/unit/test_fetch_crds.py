"""fetch_crds: the fallback that downloads the pinned upstream CRDs, verified by SHA-256. Served here
from a local mirror on 127.0.0.1 (the real files of shared/crds), as TEG_ISTIO_CRDS_BASE_URL allows."""

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

SHARED = REPO.parent / "shared" / "crds"


@pytest.fixture
def mirror(tmp_path):
    if not SHARED.is_dir():
        pytest.skip("shared/crds is not beside the checkout")
    root = tmp_path / "mirror"
    shutil.copytree(SHARED, root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_pinned_file_is_fetched_and_verified(mirror, tmp_path):
    _root, url = mirror
    target = tmp_path / "out"
    fetch_crds.fetch(target, url)
    for folder, name, _sha256, _url in fetch_crds.entries():
        assert (target / folder / name).read_bytes() == (SHARED / folder / name).read_bytes()


def test_a_tampered_file_is_refused_and_not_kept(mirror, tmp_path):
    root, url = mirror
    victim = root / "istio-1.29.6" / "crd-all.gen.yaml"
    victim.write_text(victim.read_text() + "\n# tampered\n")
    with pytest.raises(SystemExit, match=r"istio-1.29.6/crd-all.gen.yaml has SHA-256 .* expected"):
        fetch_crds.fetch(tmp_path / "out", url)
    assert not (tmp_path / "out" / "istio-1.29.6" / "crd-all.gen.yaml").exists()


def test_the_lock_covers_every_shared_file():
    if not SHARED.is_dir():
        pytest.skip("shared/crds is not beside the checkout")
    locked = {(folder, name) for folder, name, _sha256, _url in fetch_crds.entries()}
    shared = {(p.parent.name, p.name) for p in SHARED.glob("*/*.yaml")}
    assert locked == shared
