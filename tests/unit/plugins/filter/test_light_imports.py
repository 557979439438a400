"""Filter plugins and the module_utils they share must not import the kubernetes client.

Ansible loads a collection's filter plugins anew in the forked worker of every task that uses one of
them (and loads every filter file of the collection to find it). When expose_app.py imported
MANAGED_BY_LABEL from module_utils/cluster.py, each such task imported the kubernetes client and took
about 0.35 s instead of 0.04 s (make bench, docs/architecture.md). Checked in a fresh interpreter,
since this test process may already have imported the client."""

import subprocess
import sys
from pathlib import Path

FILTERS = sorted(p.stem for p in (Path(__file__).resolve().parents[3].parent / "plugins" / "filter").glob("*.py"))

PROBE = """
import sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
import importlib
for name in sys.argv[2:]:
    importlib.import_module("ansible_collections.teg.istio.plugins.filter." + name)
print(sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("kubernetes", "urllib3", "requests")}))
"""


def test_every_filter_plugin_is_found():
    assert {"expose_app", "istio_install", "strict_mtls", "teg_istio_prep", "istio_pending", "teg_restart"} <= set(FILTERS)


def test_filter_plugins_do_not_import_the_kubernetes_client(collections_root):
    out = subprocess.run([sys.executable, "-c", PROBE, str(collections_root), *FILTERS],
                         check=True, capture_output=True, text=True).stdout.strip()
    assert out == "[]", "filter plugins imported %s" % out
