# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What modules and filter plugins share: the label that marks what the collection manages, how an
object is named in messages, and the version in an image reference.

No imports beyond the standard library on purpose: Ansible loads a collection's filter plugins anew in
the worker of every task that uses one, and importing the kubernetes client there (as cluster.py
does) cost about 0.35 s per task."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Objects the collection creates carry this label, so that a later run (or teardown) finds exactly
# what the collection made and nothing it merely touched.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "teg.istio"


def describe(kind, name, namespace=None):
    return "%s %s/%s" % (kind, namespace, name) if namespace else "%s %s" % (kind, name)


def image_version(image):
    """The tag of a container image reference without a leading "v" (docker.io/istio/pilot:1.29.6 ->
    "1.29.6"); None when it has no tag (only a digest, or none at all)."""
    if not image:
        return None
    name, colon, tag = image.split("@", 1)[0].rpartition(":")
    # A colon before the last "/" belongs to a registry port (registry:5000/istio/pilot), not a tag.
    if not colon or not name or "/" in tag:
        return None
    return tag[1:] if tag[:1] == "v" and tag[1:2].isdigit() else tag
