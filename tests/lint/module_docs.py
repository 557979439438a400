"""Every module of the collection renders in ansible-doc (its doc fragments resolved) with a
description, EXAMPLES and RETURN: what `ansible-doc teg.istio.<module>` shows users. Run by
tests/lint/lint.sh with ANSIBLE_COLLECTIONS_PATH pointing at the collection link."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main():
    names = sorted(f"teg.istio.{p.stem}" for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "--json", "-t", "module", *names],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"ansible-doc failed:\n{proc.stderr}")
    rendered = json.loads(proc.stdout)
    problems = []
    for name in names:
        entry = rendered.get(name) or {}
        doc = entry.get("doc") or {}
        if not doc.get("description"):
            problems.append(f"{name}: no DOCUMENTATION description")
        if not (entry.get("examples") or "").strip():
            problems.append(f"{name}: no EXAMPLES")
        if not entry.get("return"):
            problems.append(f"{name}: no RETURN")
    if problems:
        sys.exit("\n".join(problems))
    print(f"{len(names)} modules render with EXAMPLES and RETURN")


if __name__ == "__main__":
    main()
