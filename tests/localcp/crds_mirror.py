"""Run a command on upstream CRDs served by the pinned-download path (`make test` does so for one lane).

    crds_mirror.py DOWNLOAD_DIR -- COMMAND [ARG...]

Serves the CRD folder the launcher resolves (localcp.crds_dir()) over HTTP on 127.0.0.1, empties
DOWNLOAD_DIR, and runs COMMAND with
    TEG_ISTIO_CRDS_DIR=<a folder that does not exist>   so no CRD folder is found,
    TEG_ISTIO_CRDS_BASE_URL=http://127.0.0.1:<port>     the mirror fetch_crds downloads from,
    TEG_ISTIO_CRDS_DOWNLOAD_DIR=DOWNLOAD_DIR            where it puts them, each verified against crds.lock.
Every cluster COMMAND starts thus gets its CRDs through the fallback a machine without the CRD folder
uses (the public CI, a user's clone), with the checksum verification, and tests/integration/test_localcp.py
checks that the cluster under test got them from DOWNLOAD_DIR. The exit status is COMMAND's; a command
that succeeded although the mirror did not serve every pinned file fails (the fallback did not run).
"""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fetch_crds  # noqa: E402
import localcp  # noqa: E402


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    served = set()

    def do_GET(self):
        super().do_GET()
        self.served.add(self.path.lstrip("/"))

    def log_message(self, *args):
        pass


def main(argv):
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit(__doc__)
    download_dir, command = Path(argv[0]).resolve(), argv[2:]
    source = localcp.crds_dir()
    shutil.rmtree(download_dir, ignore_errors=True)
    handler = functools.partial(_CountingHandler, directory=str(source))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    env = dict(os.environ, TEG_ISTIO_CRDS_DIR=str(download_dir.parent / (download_dir.name + ".no-such-folder")),
               TEG_ISTIO_CRDS_BASE_URL=url, TEG_ISTIO_CRDS_DOWNLOAD_DIR=str(download_dir))
    print(f"crds-mirror: {source} served on {url}; CRDs are downloaded into {download_dir}", file=sys.stderr, flush=True)
    try:
        # close_fds=False: a make below keeps the jobserver descriptors of the make above.
        status = subprocess.run(command, env=env, check=False, close_fds=False).returncode
    finally:
        server.shutdown()
    pinned = {f"{folder}/{name}" for folder, name, _sha256, _url in fetch_crds.entries()}
    missing = sorted(pinned - _CountingHandler.served)
    print(f"crds-mirror: served {len(pinned) - len(missing)} of {len(pinned)} pinned files", file=sys.stderr)
    if status == 0 and missing:
        print(f"crds-mirror: never requested: {', '.join(missing)}; the command did not use the pinned download",
              file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
