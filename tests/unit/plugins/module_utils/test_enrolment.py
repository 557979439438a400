"""Which label puts a namespace into an existing mesh (module_utils/enrolment.py): the default revision or the
revision tag default, a mesh of revisions only, and none yet. The namespace-label rules themselves are exercised
through the roles' patches in test_teg_istio_prep.py and test_expose_app.py."""

from ansible_collections.teg.istio.plugins.module_utils import enrolment


def webhook(name, revision, tag=None):
    labels = {"istio.io/rev": revision}
    if tag:
        labels["istio.io/tag"] = tag
    return {"metadata": {"name": name, "labels": labels}}


def labels_for(webhooks):
    return enrolment.default_revision_labels(enrolment.revision_injectors(webhooks), "Namespace eg",
                                             "teg_istio_prep_revision")


def test_istio_injection_where_it_resolves_to_a_revision_or_where_istio_is_still_to_come():
    enabled = ({"istio-injection": "enabled"}, None)
    assert labels_for([]) == enabled
    assert labels_for([webhook("istio-sidecar-injector", "default")]) == enabled
    # A revision tag default (istioctl tag set default --revision stable) makes istio-injection mean stable.
    assert labels_for([webhook("istio-sidecar-injector-stable", "stable"),
                       webhook("istio-revision-tag-default", "stable", tag="default")]) == enabled


def test_a_mesh_of_one_revision_is_joined_by_it_and_of_several_refused_in_one_line():
    assert labels_for([webhook("istio-sidecar-injector-stable", "stable")]) == ({"istio.io/rev": "stable"}, None)
    labels, error = labels_for([webhook("istio-sidecar-injector-stable", "stable"),
                                webhook("istio-sidecar-injector-canary", "canary")])
    assert labels is None and error == (
        "Namespace eg: the mesh has revisions canary, stable and no default one (no default revision, no revision tag "
        "default), so istio-injection=enabled would inject nothing: set teg_istio_prep_revision to the revision (or "
        "tag) TEG is to join")
