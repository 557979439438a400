# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of teg.istio.mesh_verify as a JUnit XML report, for CI systems and dashboards that read JUnit: one
testsuite per cluster, one testcase per check, a failure per failed check holding its findings (each names the
object and the fix)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from xml.etree import ElementTree


def verify_junit(checks, cluster):
    """The XML document (a str) for `checks` (mesh_verify's `checks`) of `cluster`."""
    failed = [check for check in checks if check.get("findings")]
    suites = ElementTree.Element("testsuites", name="teg.istio verify", tests=str(len(checks)),
                                 failures=str(len(failed)), errors="0")
    suite = ElementTree.SubElement(suites, "testsuite", name=cluster, tests=str(len(checks)),
                                   failures=str(len(failed)), errors="0", skipped="0")
    for check in checks:
        case = ElementTree.SubElement(suite, "testcase", classname="teg.istio.verify.%s" % cluster, name=check["name"])
        if check.get("findings"):
            # The message is the findings on one line, as the run says them; the text has one finding a line.
            failure = ElementTree.SubElement(case, "failure", type="finding", message=" | ".join(check["findings"]))
            failure.text = "\n".join(check["findings"])
    return '<?xml version="1.0" encoding="UTF-8"?>\n%s\n' % ElementTree.tostring(suites, encoding="unicode")


class FilterModule(object):
    def filters(self):
        return {"verify_junit": verify_junit}
