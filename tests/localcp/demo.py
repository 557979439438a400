"""`make demo`: start the local control plane, run playbooks/site.yml against it, and print what the
run changed in the cluster, object by object; then stop the cluster unless --keep.

    demo.py [--matrix current|legacy] [--keep]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOCALCP = [sys.executable, str(HERE / "localcp.py")]
# What the procedure touches, in the order a reader expects.
KINDS = ["namespaces", "services", "deployments", "gatewayclasses.gateway.networking.k8s.io",
         "envoyproxies", "gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io",
         "virtualservices.networking.istio.io", "peerauthentications.security.istio.io",
         "mutatingwebhookconfigurations", "customresourcedefinitions"]
VOLATILE = {"resourceVersion", "generation", "managedFields", "uid", "creationTimestamp", "status"}


def cluster_env():
    out = subprocess.run([*LOCALCP, "env"], check=True, capture_output=True, text=True).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        env[key] = value.replace("$PATH", os.environ["PATH"])
    return env


def snapshot(env):
    objects = {}
    for kind in KINDS:
        proc = subprocess.run(["kubectl", "get", kind, "-A", "-o", "json"], env=env, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:  # the kind is not served (yet): nothing of it to show
            continue
        for item in json.loads(proc.stdout)["items"]:
            meta = item["metadata"]
            key = (item["kind"], meta.get("namespace", ""), meta["name"])
            objects[key] = _essence(item)
    return objects


def _essence(item):
    meta = {k: v for k, v in item["metadata"].items() if k not in VOLATILE}
    meta.get("annotations", {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
    body = {k: v for k, v in item.items() if k not in ("metadata", "status")}
    return {"metadata": meta, **body}


def _changes(before, after, path=""):
    """Leaf paths whose value differs, as 'path: old -> new'."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            out += _changes(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
        return out
    if before != after:
        if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
            out = []
            for i, (b, a) in enumerate(zip(before, after)):
                out += _changes(b, a, f"{path}[{i}]")
            return out
        return [f"{path}: {json.dumps(before)} -> {json.dumps(after)}"]
    return []


def summary(before, after):
    lines = []
    for key in sorted(set(after) - set(before)):
        lines.append(f"  + created {key[0]} {'/'.join(p for p in key[1:] if p)}")
    for key in sorted(set(before) & set(after)):
        diffs = _changes(before[key], after[key])
        if diffs:
            lines.append(f"  ~ changed {key[0]} {'/'.join(p for p in key[1:] if p)}")
            lines += [f"      {d}" for d in diffs[:12]] + ([f"      … {len(diffs) - 12} more"] if len(diffs) > 12 else [])
    for key in sorted(set(before) - set(after)):
        lines.append(f"  - deleted {key[0]} {'/'.join(p for p in key[1:] if p)}")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--matrix", default=os.environ.get("MATRIX", "current"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    subprocess.run([*LOCALCP, "up", "--matrix", args.matrix], check=True)
    rc = 1
    try:
        env = cluster_env()
        before = snapshot(env)
        site = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/site.yml",
                               "-e", "@tests/localcp/site-vars.yml"], cwd=REPO, env=env, check=False)
        rc = site.returncode
        lines = summary(before, snapshot(env))
        print(f"\n== What site.yml changed in the {args.matrix} cluster ({len(lines)} lines) ==")
        print("\n".join(lines) if lines else "  nothing")
    finally:
        if args.keep:
            print("\nThe cluster keeps running: eval \"$(make -s cluster-env)\"; `make cluster-down` stops it.")
        else:
            subprocess.run([*LOCALCP, "down"], check=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
