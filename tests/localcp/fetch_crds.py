"""Download the pinned upstream CRDs (crds.lock) into TARGET_DIR/<folder>/<file>, the layout of the CRD
folder that localcp.py crds_dir() resolves.

    fetch_crds.py TARGET_DIR

Every file is verified against its SHA-256 before it is kept; a mismatch or a download failure
stops with one line naming the file. TEG_ISTIO_CRDS_BASE_URL points at a mirror with that layout
(<base>/<folder>/<file>; http(s):// or file://) instead of the upstream repositories.
"""

import hashlib
import os
import sys
import urllib.request
from pathlib import Path

LOCK = Path(__file__).resolve().parent / "crds.lock"


def entries():
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            folder, name, sha256, url = line.split()
            yield folder, name, sha256, url


def fetch(target, base_url=None):
    for folder, name, sha256, url in entries():
        dest = target / folder / name
        if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == sha256:
            continue
        source = f"{base_url.rstrip('/')}/{folder}/{name}" if base_url else url
        try:
            with urllib.request.urlopen(source, timeout=60) as resp:
                data = resp.read()
        except OSError as exc:
            raise SystemExit(f"fetch_crds: cannot download {source}: {exc}; set TEG_ISTIO_CRDS_DIR to a "
                             "folder holding them as <folder>/<file> (crds.lock)") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise SystemExit(f"fetch_crds: {source} has SHA-256 {digest}, expected {sha256} (crds.lock); not kept")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(dest)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    fetch(Path(sys.argv[1]), os.environ.get("TEG_ISTIO_CRDS_BASE_URL"))
