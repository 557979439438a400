"""The helper every refusal and fault test uses (conftest.assert_one_line_failure) fails where it should: on
runs shaped as ansible-playbook's json callback prints them. No cluster is needed."""

import json

import pytest

from conftest import PlaybookRun, assert_one_line_failure

LINE = "namespace nowhere not found: set teg_istio_prep_namespace to the namespace TEG is installed in"


def _run(*results, rc=2, stderr=""):
    tasks = [{"task": {"name": f"task {i}"}, "hosts": {"localhost": result}} for i, result in enumerate(results)]
    stdout = json.dumps({"plays": [{"play": {"name": "p"}, "tasks": tasks}],
                         "stats": {"localhost": {"failed": 1, "changed": 0, "ok": len(results) - 1}}})
    return PlaybookRun(rc, stdout, stderr, [])


def _failed(msg=LINE, **extra):
    # ansible-core 2.19 records this placeholder on every failure it raised no exception for.
    return dict({"failed": True, "msg": msg, "exception": "(traceback unavailable)"}, **extra)


def test_one_line_naming_the_cause_and_the_fix_passes():
    assert assert_one_line_failure(_run({"changed": False}, _failed()), ["namespace nowhere not found"],
                                   ["set teg_istio_prep_namespace"]) == LINE


def test_a_rescued_failure_before_the_line_is_accepted():
    rescued = _failed("Failed to create object: b'{...}'", exception="Traceback (most recent call last):\n ...")
    assert assert_one_line_failure(_run(rescued, _failed()), ["not found"], ["set teg_istio_prep_namespace"])


def test_the_argument_spec_header_of_ansible_core_is_taken_off_for_one_problem():
    one = _failed("Validation of arguments failed:\nvalue of x must be one of: a, b, got: c", argument_errors=[
        "value of x must be one of: a, b, got: c"])
    assert assert_one_line_failure(_run(one), ["got: c"], ["must be one of: a, b"]) == \
        "value of x must be one of: a, b, got: c"
    two = _failed("Validation of arguments failed:\nvalue of x ...\nvalue of y ...",
                  argument_errors=["value of x ...", "value of y ..."])
    with pytest.raises(AssertionError):
        assert_one_line_failure(_run(two), ["value of x"], ["value of y"])


@pytest.mark.parametrize("run, cause, fix", [
    (_run(_failed(), rc=0), ["not found"], ["set"]),  # it did not fail
    (_run(_failed(LINE + "\nand a second line")), ["not found"], ["set"]),
    (_run(_failed(exception="Traceback (most recent call last):\n  File ...")), ["not found"], ["set"]),
    (_run(_failed("MODULE FAILURE\nSee stdout/stderr for the exact error", module_stderr="Traceback (most recent "
                  "call last):\n...")), ["MODULE FAILURE"], ["See stdout"]),
    (_run(_failed(), stderr="The full traceback is:\nTraceback (most recent call last):\n"), ["not found"], ["set"]),
    (_run(_failed()), ["not found"], ["grant that verb"]),  # the fix is not named
    (_run(_failed()), ["GatewayClass"], ["set"]),  # nor the cause
    (_run({"changed": False}, rc=2), ["not found"], ["set"]),  # no failed task at all
    (PlaybookRun(2, "PLAY RECAP\nlocalhost : ok=1 failed=1", "", []), ["not found"], ["set"]),  # not the json callback
], ids=["rc-0", "two-lines", "traceback", "module-crash", "traceback-on-stderr", "no-fix", "no-cause", "no-failed-task",
        "default-callback"])
def test_anything_else_fails_the_check(run, cause, fix):
    with pytest.raises(AssertionError):
        assert_one_line_failure(run, cause, fix)


def test_cause_and_fix_must_both_be_named():
    with pytest.raises(AssertionError, match="name both"):
        assert_one_line_failure(_run(_failed()), ["not found"], [])
