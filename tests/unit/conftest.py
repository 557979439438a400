"""Make `ansible_collections.teg.istio` (and the bundled kubernetes.core) importable, as under Ansible.

Two ways to run these tests:
- `make unit` (plain pytest in the repository): the repository is the collection, linked by `make venv`
  into .ansible/collections, and that link is the collections path.
- `make units` (`ansible-test units`, tests/lint/collection-tree.sh): the collection is a copy at
  <root>/ansible_collections/teg/istio, and ansible-test has already installed a collection finder on
  <root>; installing another one here would replace it, so <root> is used.
"""

from pathlib import Path

import pytest

from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

REPO = Path(__file__).resolve().parents[2]
if REPO.parents[1].name == "ansible_collections":
    COLLECTIONS = REPO.parents[2]
else:
    COLLECTIONS = REPO / ".ansible" / "collections"
_AnsibleCollectionFinder(paths=[str(COLLECTIONS)])._install()


@pytest.fixture(name="collections_root")
def _collections_root():
    """The directory holding ansible_collections/, for tests that import plugins in a fresh process."""
    return COLLECTIONS
