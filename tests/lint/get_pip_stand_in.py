"""Offline stand-in for ansible-test's pip bootstrap (which downloads get-pip.py from a host we
cannot reach): install pip from the interpreter's bundled ensurepip, then the requested pip from the
package index. ansible-test looks for it at ~/.ansible/test/cache/get_pip_<version>.py."""
import os
import subprocess
import sys

# In-process ensurepip would set PIP_CONFIG_FILE=/dev/null and hide the index settings of pip.conf.
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]  # get-pip-only flags
env = {k: v for k, v in os.environ.items() if k != "PIP_CONFIG_FILE"}
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args, env=env))
