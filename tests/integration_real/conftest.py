"""The real-controllers suite (docs/real-controllers.md): the fixtures of tests/integration/conftest.py,
on a cluster where the Envoy Gateway controller and istiod really run (CONTROLLERS=real, which
`localcp.py up` reads). Run with `make integration-real`."""

import importlib.util
import os
from pathlib import Path

os.environ["CONTROLLERS"] = "real"

_spec = importlib.util.spec_from_file_location(
    "teg_istio_integration_conftest", Path(__file__).resolve().parents[1] / "integration" / "conftest.py")
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

# Re-exported: pytest finds fixtures by the names in this module.
cluster = _base.cluster
k8s = _base.k8s
play = _base.play
MATRIX = _base.MATRIX
