"""Every role documents exactly the variables its defaults define, with the same default values, and
describes itself (prometheus.prometheus keeps the two in sync the same way)."""

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if p.is_dir())


def _load(path):
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_and_argument_specs_agree(role):
    defaults = _load(role / "defaults" / "main.yml")
    spec = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]
    options = spec.get("options") or {}
    assert sorted(defaults) == sorted(options), "defaults/main.yml and meta/argument_specs.yml list different variables"
    for name, value in defaults.items():
        if isinstance(value, str) and "{{" in value and "default" not in options[name]:
            # A default taken from another role's variable: a template is no value of type int, dict or list
            # of dicts (antsibull-docs refuses it), so the spec leaves it out and its description names it.
            assert "Defaults to" in str(options[name].get("description")), f"{name}: the description does not name its default"
        else:
            assert options[name].get("default") == value, f"{name}: default {value!r} vs spec {options[name].get('default')!r}"
        assert options[name].get("description"), f"{name} has no description"
        assert name.startswith(role.name + "_"), f"{name} lacks the role prefix {role.name}_"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_each_role_describes_itself(role):
    spec = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]
    assert spec.get("short_description")
    assert spec.get("description")
