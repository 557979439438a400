# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: how the Envoy pods' sidecar is made to outlive Envoy's drain (issue #16 item 1,
README "Running it in production"). Envoy Gateway drains its Envoy pods for up to the EnvoyProxy's
spec.shutdown.drainTimeout on shutdown, an injected sidecar for Istio's terminationDrainDuration (5 s by
default); requests still draining through Envoy then fail when the sidecar is gone. Two cures, chosen
here from the versions discovered: the pod annotation sidecar.istio.io/nativeSidecar "true" (the sidecar
becomes a restartable init container, which Kubernetes stops only after Envoy has exited), or a
proxy.istio.io/config annotation whose terminationDrainDuration is at least the drain timeout. Pure:
unit-tested in tests/unit/plugins/module_utils/test_teg_istio_prep_drain.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import re

from ansible_collections.teg.istio.plugins.module_utils.names import (
    DRAIN_ANNOTATIONS,
    NATIVE_SIDECAR_ANNOTATION,
    PROXY_CONFIG_ANNOTATION,
    minor_version,
)

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML comes with ansible-core
    yaml = None

DRAIN_KEY = "terminationDrainDuration"
MODES = ("auto", "native", "drain_duration", "none")
# Envoy Gateway's default when spec.shutdown.drainTimeout is unset (api/v1alpha1/envoyproxy_types.go, v1.9.0).
DEFAULT_DRAIN_TIMEOUT_SECONDS = 60
# Istio honours the per-pod nativeSidecar annotation from 1.24; Kubernetes runs sidecar (restartable init)
# containers by default from 1.29 (feature SidecarContainers beta).
NATIVE_MIN_ISTIO = (1, 24)
NATIVE_MIN_KUBERNETES = (1, 29)

# Gateway API's Duration (what spec.shutdown.drainTimeout is): up to four <number><unit> parts.
_GATEWAY_DURATION = re.compile(r"^([0-9]{1,5}(h|ms|m|s)){1,4}$")
_GATEWAY_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
# A protobuf Duration in JSON/YAML (what Istio's ProxyConfig takes): seconds with an "s".
_PROTO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?)s$")


def gateway_duration_seconds(text):
    """The seconds of a Gateway API Duration ("60s", "1m30s", "500ms"); None when it is not one."""
    if not isinstance(text, str) or not _GATEWAY_DURATION.match(text):
        return None
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in _GATEWAY_PART.findall(text))


def _pod_annotations(envoyproxy):
    kubernetes = (((envoyproxy or {}).get("spec") or {}).get("provider") or {}).get("kubernetes") or {}
    workload = kubernetes.get("envoyDaemonSet") if kubernetes.get("envoyDaemonSet") is not None else \
        kubernetes.get("envoyDeployment")
    return ((workload or {}).get("pod") or {}).get("annotations") or {}


def drain_timeout_seconds(envoyproxy, where):
    """(seconds, error): how long Envoy Gateway drains the EnvoyProxy's Envoy pods at most."""
    value = (((envoyproxy or {}).get("spec") or {}).get("shutdown") or {}).get("drainTimeout")
    if value is None:
        return DEFAULT_DRAIN_TIMEOUT_SECONDS, None
    seconds = gateway_duration_seconds(value)
    if seconds is None:
        return None, ("%s spec.shutdown.drainTimeout %r is not a duration such as 60s or 1m30s: correct it, or set "
                      "teg_istio_prep_sidecar_drain to none" % (where, value))
    return seconds, None


def _proxy_config(text, where):
    """(mapping, error): a proxy.istio.io/config annotation as read."""
    if not text:
        return {}, None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        return None, ("%s pod annotation %s is not a YAML mapping of Istio ProxyConfig fields: correct it, or set "
                      "teg_istio_prep_sidecar_drain to none" % (where, PROXY_CONFIG_ANNOTATION))
    return value, None


def _proto_seconds(value):
    match = _PROTO_DURATION.match(str(value)) if value is not None else None
    return float(match.group(1)) if match else None


def proxy_config_annotation(current, seconds, where):
    """(value, error): the proxy.istio.io/config annotation that drains the sidecar for at least `seconds`,
    keeping every other field of `current` (the annotation as read, None when absent); `current` itself when
    its terminationDrainDuration is already long enough, so nothing is written."""
    config, error = _proxy_config(current, where)
    if error:
        return None, error
    have = config.get(DRAIN_KEY)
    if have is not None:
        have_seconds = _proto_seconds(have)
        if have_seconds is None:
            return None, ("%s pod annotation %s has %s %r, not a duration in seconds such as 60s: correct it, or set "
                          "teg_istio_prep_sidecar_drain to none" % (where, PROXY_CONFIG_ANNOTATION, DRAIN_KEY, have))
        if have_seconds >= seconds:
            return current, None
    config = dict(config)
    config[DRAIN_KEY] = "%ds" % int(math.ceil(seconds))
    return json.dumps(config, sort_keys=True, separators=(",", ":")), None


def _native_supported(istio, kubernetes):
    """None when native sidecars work with these versions (unknown counts as working), else why not."""
    if istio is not None and istio < NATIVE_MIN_ISTIO:
        return "Istio %d.%d has no per-pod %s (Istio 1.24 or later)" % (istio + (NATIVE_SIDECAR_ANNOTATION,))
    if kubernetes is not None and kubernetes < NATIVE_MIN_KUBERNETES:
        return "Kubernetes %d.%d runs no sidecar containers by default (1.29 or later)" % kubernetes
    return None


def decide_drain(mode, envoyproxy, where, istio_version, kubernetes_version, shutdown_served, pod_annotations):
    """({"mode", "annotations", "reason"}, errors): the drain annotations the Envoy pods get.

    `mode`: teg_istio_prep_sidecar_drain. `envoyproxy`: the EnvoyProxy that will carry them, as read (None when
    the role creates it). `istio_version`/`kubernetes_version`: as discovered (None when unknown).
    `shutdown_served`: whether the EnvoyProxy API has spec.shutdown (Envoy Gateway v1.0 and later; before, Envoy
    exits on SIGTERM without draining). `pod_annotations`: teg_istio_prep_pod_annotations."""
    if mode not in MODES:
        return None, ["teg_istio_prep_sidecar_drain %r is not one of %s" % (mode, ", ".join(MODES))]
    if mode == "none":
        return {"mode": "none", "annotations": {}, "reason": "teg_istio_prep_sidecar_drain is none"}, []
    clash = sorted(key for key in DRAIN_ANNOTATIONS if key in (pod_annotations or {}))
    if clash:
        return None, ["teg_istio_prep_pod_annotations sets %s, which teg_istio_prep_sidecar_drain %s manages: remove "
                      "it there, or set teg_istio_prep_sidecar_drain to none to manage it yourself"
                      % (", ".join(clash), mode)]
    istio = minor_version(istio_version)
    kubernetes = minor_version(kubernetes_version)
    unsupported = _native_supported(istio, kubernetes)
    if mode == "native":
        if unsupported:
            return None, ["teg_istio_prep_sidecar_drain native: %s: set it to auto or drain_duration" % unsupported]
        return {"mode": "native", "annotations": {NATIVE_SIDECAR_ANNOTATION: "true"},
                "reason": "teg_istio_prep_sidecar_drain is native"}, []
    if not shutdown_served:
        if mode == "drain_duration":
            return None, ["teg_istio_prep_sidecar_drain drain_duration: the EnvoyProxy API has no spec.shutdown (Envoy "
                          "Gateway before v1.0 does not drain its Envoy pods, so there is no drain to outlive): set it "
                          "to auto or none"]
        return {"mode": "none", "annotations": {},
                "reason": "the EnvoyProxy API has no spec.shutdown: Envoy Gateway before v1.0 stops Envoy without "
                          "draining, so the sidecar's own drain already outlives it"}, []
    current = _pod_annotations(envoyproxy)
    if mode == "auto" and not unsupported and current.get(NATIVE_SIDECAR_ANNOTATION) != "false":
        return {"mode": "native", "annotations": {NATIVE_SIDECAR_ANNOTATION: "true"},
                "reason": "Istio %s and Kubernetes %s run native sidecars"
                          % (istio_version or "(version unknown)", kubernetes_version or "(version unknown)")}, []
    seconds, error = drain_timeout_seconds(envoyproxy, where)
    if error:
        return None, [error]
    value, error = proxy_config_annotation(current.get(PROXY_CONFIG_ANNOTATION), seconds, where)
    if error:
        return None, [error]
    if mode == "drain_duration":
        reason = "teg_istio_prep_sidecar_drain is drain_duration"
    elif unsupported:
        reason = unsupported
    else:
        reason = "%s has %s \"false\"" % (where, NATIVE_SIDECAR_ANNOTATION)
    return {"mode": "drain_duration", "annotations": {PROXY_CONFIG_ANNOTATION: value},
            "reason": reason + "; the sidecar drains for at least Envoy's drain timeout (%gs)" % seconds}, []


def drain_annotations_after_teardown(envoyproxy, where):
    """(annotations to remove, annotations to set): what teardown takes back from an EnvoyProxy the collection
    does not own: nativeSidecar "true", and terminationDrainDuration out of proxy.istio.io/config (the whole
    annotation when nothing else is in it). A proxy config it cannot read is left alone."""
    current = _pod_annotations(envoyproxy)
    remove, replace = [], {}
    if current.get(NATIVE_SIDECAR_ANNOTATION) == "true":
        remove.append(NATIVE_SIDECAR_ANNOTATION)
    if PROXY_CONFIG_ANNOTATION in current:
        config, error = _proxy_config(current[PROXY_CONFIG_ANNOTATION], where)
        if not error and DRAIN_KEY in config:
            rest = dict((k, v) for k, v in config.items() if k != DRAIN_KEY)
            if rest:
                replace[PROXY_CONFIG_ANNOTATION] = json.dumps(rest, sort_keys=True, separators=(",", ":"))
            else:
                remove.append(PROXY_CONFIG_ANNOTATION)
    return remove, replace
