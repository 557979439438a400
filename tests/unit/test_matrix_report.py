"""tests/matrix/matrix.py's reading of a make test lane's JUnit XML: the lane's outcome of the matrix's selection
counts as passed only when every test of the selection ran there and passed."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "matrix"))
import matrix  # noqa: E402  pylint: disable=wrong-import-position


def _case(test, outcome=None):
    path, name = test.split("::")
    classname = path.removesuffix(".py").replace("/", ".")
    inner = f"<{outcome} message='x'/>" if outcome else ""
    return f'<testcase classname="{classname}" name="{name}" time="1.0">{inner}</testcase>'


def _junit(tmp_path, cases):
    path = tmp_path / "junit.xml"
    path.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest">' + "".join(cases)
                    + "</testsuite></testsuites>")
    return path


def _selection_cases():
    """The selection as a lane runs it: a parametrised test by its cases, the rest by name."""
    cases = []
    for test in matrix.SELECTION:
        if "[" in test or not test.endswith("process"):
            cases.append(test)
        else:
            cases += [f"{test}[check]", f"{test}[run-diff]"]
    return cases


def test_every_test_of_the_selection_passed(tmp_path):
    others = [_case("tests/integration/test_fleet.py::test_other", "failure")]
    assert matrix.selection_outcome(_junit(tmp_path, [_case(t) for t in _selection_cases()] + others)) == (
        True, "every test of the selection passed")


@pytest.mark.parametrize("outcome", ["failure", "error", "skipped"])
def test_one_case_that_did_not_pass_fails_the_combination(tmp_path, outcome):
    cases = _selection_cases()
    xml = [_case(t, outcome if t == cases[-1] else None) for t in cases]
    passed, reason = matrix.selection_outcome(_junit(tmp_path, xml))
    assert not passed and reason.endswith(f": {outcome}"), reason


def test_a_test_of_the_selection_that_did_not_run_fails_the_combination(tmp_path):
    cases = _selection_cases()
    passed, reason = matrix.selection_outcome(_junit(tmp_path, [_case(t) for t in cases[1:]]))
    assert (passed, reason) == (False, f"{matrix.SELECTION[0]} did not run")


def test_only_the_named_case_of_a_parametrised_selection_counts(tmp_path):
    named = [t for t in matrix.SELECTION if "[" in t][0]
    other_case = named.split("[")[0] + "[another-row]"
    cases = [_case(t) for t in _selection_cases() if t != named] + [_case(other_case)]
    assert matrix.selection_outcome(_junit(tmp_path, cases)) == (False, f"{named} did not run")
