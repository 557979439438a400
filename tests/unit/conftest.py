"""Make `ansible_collections.teg.istio` (and the bundled kubernetes.core) importable, as under Ansible:
the repository is the collection, linked by `make venv` into .ansible/collections."""

from pathlib import Path

from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

REPO = Path(__file__).resolve().parents[2]
_AnsibleCollectionFinder(paths=[str(REPO / ".ansible" / "collections")])._install()
