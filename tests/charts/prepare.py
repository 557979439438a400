"""Stage the test stand-ins for Istio's `base`, `istiod`, `cni` and `ztunnel` charts for one Istio version.

    prepare.py OUT_DIR [--matrix current|legacy | --istio-version 1.31.4] [--also-version 1.30.0 ...]

writes, from tests/charts/istio-base-test, istiod-test, cni-test and ztunnel-test:

    OUT_DIR/archives/base-<v>.tgz, istiod-<v>.tgz,              a chart repository as `helm pull`
                     cni-<v>.tgz, ztunnel-<v>.tgz, index.yaml   and `helm repo index` leave it (air gap,
                                                                or served over HTTP: a mirror)
    OUT_DIR/dirs/base/, istiod/, cni/, ztunnel/                  the same charts unpacked

--also-version adds archives of the same stand-ins at another version (base with the CRDs of <v>), so
that an in-place upgrade from one version to another can be tested.

Every chart gets `version` and `appVersion` <v>, so the role's version pin is exercised, and the base
chart gets that Istio version's real CRDs (crd-all.gen.yaml, byte for byte) in crds/, read from the
CRD folder the launcher resolves (localcp.crds_dir(): TEG_ISTIO_CRDS_DIR, else the files pinned in
tests/localcp/crds.lock, fetched when missing). Nothing of that is committed: OUT_DIR lives in the cluster's
state directory.
"""

import argparse
import gzip
import hashlib
import io
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# chart name (as in Chart.yaml and as the role looks it up) -> folder of the stand-in
CHARTS = {"base": "istio-base-test", "istiod": "istiod-test", "cni": "cni-test", "ztunnel": "ztunnel-test"}
# Archives are rebuilt on every cluster-up: a fixed timestamp keeps them byte-identical.
_EPOCH = 946684800  # 2000-01-01T00:00:00Z


class PrepareError(Exception):
    """A failure with a one-line message."""


def istio_version_for(matrix):
    """The Istio version of a local-cluster flavour ("current" -> "1.31.4")."""
    sys.path.insert(0, str(REPO / "tests" / "localcp"))
    import localcp  # noqa: E402 -- the single place that pins the flavours

    try:
        return localcp.MATRIX[matrix]["istio"].removeprefix("istio-")
    except KeyError:
        raise PrepareError(f"unknown flavour {matrix!r}; known: {sorted(localcp.MATRIX)}") from None


def crd_file(version, crds_root=None):
    """The real crd-all.gen.yaml of Istio `version`."""
    if crds_root is None:
        sys.path.insert(0, str(REPO / "tests" / "localcp"))
        import localcp  # noqa: E402

        crds_root = localcp.crds_dir()
    path = Path(crds_root) / f"istio-{version}" / "crd-all.gen.yaml"
    if not path.is_file():
        raise PrepareError(f"{path} does not exist: the CRD folder (TEG_ISTIO_CRDS_DIR, else tests/localcp/crds.lock) "
                           f"must hold istio-{version}/crd-all.gen.yaml")
    return path


def set_chart_version(chart_yaml_text, version):
    """Chart.yaml text with `version` and `appVersion` set to `version` (comments kept)."""
    text = chart_yaml_text
    for key in ("version", "appVersion"):
        text, count = re.subn(rf"(?m)^{key}:.*$", f"{key}: {version}", text)
        if count != 1:
            raise PrepareError(f"Chart.yaml must have exactly one top-level `{key}:` line, found {count}")
    return text


def stage_dirs(out, version, crds):
    """Copy the stand-ins to OUT/dirs/<chart name>, versioned, base with the CRDs."""
    dirs = Path(out) / "dirs"
    if dirs.exists():
        shutil.rmtree(dirs)
    for name, folder in CHARTS.items():
        target = dirs / name
        shutil.copytree(HERE / folder, target)
        chart_yaml = target / "Chart.yaml"
        chart_yaml.write_text(set_chart_version(chart_yaml.read_text(), version))
    (dirs / "base" / "crds").mkdir()
    shutil.copyfile(crds, dirs / "base" / "crds" / "crd-all.gen.yaml")
    return dirs


def _tar_chart(chart_dir, archive):
    """A chart archive as `helm package` makes it: gzip'd tar, one top folder named after the chart."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(chart_dir.rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{chart_dir.name}/{path.relative_to(chart_dir).as_posix()}")
            info.size, info.mtime, info.mode = len(data), _EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(gzip.compress(buf.getvalue(), mtime=_EPOCH))


def repo_index(archives):
    """index.yaml for a folder of chart archives, the document `helm repo index` writes."""
    entries = {}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_EPOCH))
    for archive in sorted(Path(archives).glob("*.tgz")):
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml"))
            meta = yaml.safe_load(tar.extractfile(member))
        entry = dict(meta, urls=[archive.name], created=created,
                     digest=hashlib.sha256(archive.read_bytes()).hexdigest())
        entries.setdefault(meta["name"], []).append(entry)
    return {"apiVersion": "v1", "entries": entries, "generated": created}


def stage(out, version, crds, also=()):
    """Both layouts for Istio `version`, and archives of the same charts at each version of `also` (the stand-in
    of a release to upgrade to); returns {"archives": path, "dirs": path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dirs = stage_dirs(out, version, crds)
    archives = out / "archives"
    if archives.exists():
        shutil.rmtree(archives)
    archives.mkdir()
    for name in CHARTS:
        _tar_chart(dirs / name, archives / f"{name}-{version}.tgz")
    for other in also:
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            for name in CHARTS:
                chart = Path(scratch) / name
                shutil.copytree(dirs / name, chart)
                (chart / "Chart.yaml").write_text(set_chart_version((chart / "Chart.yaml").read_text(), other))
                _tar_chart(chart, archives / f"{name}-{other}.tgz")
    (archives / "index.yaml").write_text(yaml.safe_dump(repo_index(archives), sort_keys=True))
    return {"archives": archives, "dirs": dirs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--matrix", default="current")
    group.add_argument("--istio-version")
    parser.add_argument("--also-version", action="append", default=[],
                        help="also archive the charts at this version (repeatable)")
    args = parser.parse_args(argv)
    try:
        version = args.istio_version or istio_version_for(args.matrix)
        paths = stage(args.out, version, crd_file(version), args.also_version)
    except PrepareError as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    print(paths["archives"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
