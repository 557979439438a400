"""Put the pinned upstream CRDs (crds.lock) into TARGET_DIR/<folder>/<file>, the layout of the CRD folder that
localcp.py crds_dir() resolves.

    fetch_crds.py TARGET_DIR

Most files come out of Go modules: `go mod download` in the wrapper module tests/localcp/gomod/<wrapper> fetches
the module through the Go module proxy (GOPROXY) into the module cache, verified against the wrapper's go.sum,
and the file is copied from there. The others are downloaded from their URL, or from TEG_ISTIO_CRDS_BASE_URL, a
mirror with the folder's layout (<base>/<folder>/<file>; http(s):// or file://). Every file is verified against its
SHA-256 in crds.lock before it is kept; a mismatch or a failure stops with one line naming the file. Files of the
lock's folders that the lock does not name (left by an earlier lock) are removed, so the folder holds the lock.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "crds.lock"
GOMOD_PREFIX = "gomod/"


def entries():
    """(folder, file, sha256, source) of every line of crds.lock."""
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            folder, name, sha256, source = line.split()
            yield folder, name, sha256, source


def go_source(source):
    """(wrapper, module, path in the module) of a gomod/<wrapper>:<module>:<path> source, None for a URL."""
    if not source.startswith(GOMOD_PREFIX):
        return None
    wrapper, module, path = source[len(GOMOD_PREFIX):].split(":")
    return wrapper, module, path


def _is_pinned(path, sha256):
    return path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def _keep(dest, data, sha256, origin):
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"fetch_crds: {origin} has SHA-256 {digest}, expected {sha256} (crds.lock); not kept")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Per process: both lanes of `make test` may fill the same folder at once on a fresh machine.
    tmp = dest.with_suffix(f".{os.getpid()}.part")
    tmp.write_bytes(data)
    tmp.replace(dest)


def module_dirs(wrapper, modules):
    """{module: its directory in the Go module cache}: `go mod download` in gomod/<wrapper>, at the versions its
    go.mod requires, each verified against its go.sum by the go command."""
    if shutil.which("go") is None:
        raise SystemExit("fetch_crds: the go command is not on PATH; it fetches the CRDs' Go modules "
                         f"(tests/localcp/gomod/{wrapper}); install Go or set TEG_ISTIO_CRDS_DIR to a CRD folder")
    proc = subprocess.run(["go", "mod", "download", "-json", *sorted(modules)], cwd=HERE / "gomod" / wrapper,
                          env=dict(os.environ, GOWORK="off"), capture_output=True, text=True, check=False)
    found, decoder, text = {}, json.JSONDecoder(), proc.stdout.strip()
    while text:
        info, end = decoder.raw_decode(text)
        text = text[end:].strip()
        if info.get("Error"):
            raise SystemExit(f"fetch_crds: go mod download {info['Path']} in tests/localcp/gomod/{wrapper}: "
                             f"{info['Error'].splitlines()[0]}")
        found[info["Path"]] = Path(info["Dir"])
    if proc.returncode != 0 or set(found) != set(modules):
        error = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise SystemExit(f"fetch_crds: go mod download in tests/localcp/gomod/{wrapper} failed: {error}")
    return found


def _download(url):
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.read()
    except OSError as exc:
        raise SystemExit(f"fetch_crds: cannot download {url}: {exc}; set TEG_ISTIO_CRDS_DIR to a "
                         "folder holding the files as <folder>/<file> (crds.lock)") from exc


def fetch(target, base_url=None):
    missing = [entry for entry in entries() if not _is_pinned(target / entry[0] / entry[1], entry[2])]
    wanted = {}  # wrapper -> the modules to download in it
    for _folder, _name, _sha256, source in missing:
        if go_source(source):
            wrapper, module, _path = go_source(source)
            wanted.setdefault(wrapper, set()).add(module)
    dirs = {wrapper: module_dirs(wrapper, modules) for wrapper, modules in wanted.items()}
    for folder, name, sha256, source in missing:
        dest = target / folder / name
        if go_source(source):
            wrapper, module, path = go_source(source)
            _keep(dest, (dirs[wrapper][module] / path).read_bytes(), sha256,
                  f"{module}/{path} (tests/localcp/gomod/{wrapper})")
        else:
            url = f"{base_url.rstrip('/')}/{folder}/{name}" if base_url else source
            _keep(dest, _download(url), sha256, url)
    _remove_unpinned(target)


def _remove_unpinned(target):
    pinned = {(folder, name) for folder, name, _sha256, _source in entries()}
    for folder in {folder for folder, _name in pinned}:
        for path in (target / folder).glob("*.yaml"):
            if (folder, path.name) not in pinned:
                path.unlink()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    fetch(Path(sys.argv[1]), os.environ.get("TEG_ISTIO_CRDS_BASE_URL"))
