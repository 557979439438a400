# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the common meaning of the module attributes; each module states its own
`support` and `details`. It can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options: {}
notes:
  - On the controller (connection local, no C(delegate_to), C(become) or C(async)) the module runs inside
    C(ansible-playbook) through its action plugin of the same name, which saves the second a module process
    spends importing the Kubernetes client. C(TEG_ISTIO_INPROCESS=false) in the environment, or C(inprocess = false)
    in the C([teg_istio]) section of C(ansible.cfg), runs it as a module process instead, with the same result.
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode) when in diff mode.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
"""
