"""Generate the Python code of the protobuf/gRPC contracts in ``proto/`` into ``eat/`` at the repo root.

Usage::

    python scripts/gen_proto.py          # regenerate eat/ in place (removes stale generated files)
    python scripts/gen_proto.py --check  # exit 1 if the committed eat/ differs from a fresh generation

Output is deterministic: inputs are passed to protoc in sorted order with repo-relative paths, and the
package ``__init__.py`` files are written by this script with fixed content. Generated code depends on
the pinned grpcio-tools/protobuf versions; regenerate after bumping them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = "proto"
PACKAGE_DIR = Path("eat")
INIT_DOCSTRING = '"""Generated from proto/ by scripts/gen_proto.py; do not edit."""\n'


def proto_files(repo_root: Path = REPO_ROOT) -> list[str]:
    """Repo-relative paths of all .proto files under proto/, sorted."""
    return sorted(p.relative_to(repo_root).as_posix() for p in (repo_root / PROTO_ROOT).rglob("*.proto"))


def _package_dirs(repo_root: Path) -> list[Path]:
    """Python package directories implied by the proto tree (eat, eat/v1, ...), relative to the root."""
    dirs = {PACKAGE_DIR}
    for rel in proto_files(repo_root):
        parent = Path(rel).relative_to(PROTO_ROOT).parent
        while parent != Path("."):
            dirs.add(parent)
            parent = parent.parent
    return sorted(dirs)


def _generated_files(root: Path) -> list[Path]:
    """All files under root/eat (ignoring caches), relative to root, sorted."""
    base = root / PACKAGE_DIR
    if not base.is_dir():
        return []
    return sorted(
        p.relative_to(root)
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every proto/ file, writing the ``eat`` package under out_dir.

    Returns the generated files (absolute paths under out_dir), sorted.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = proto_files(REPO_ROOT)
    if not protos:
        raise SystemExit(f"no .proto files under {REPO_ROOT / PROTO_ROOT}")
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed ({proc.returncode}):\n{proc.stderr}")
    for pkg in _package_dirs(REPO_ROOT):
        (out_dir / pkg).mkdir(parents=True, exist_ok=True)
        (out_dir / pkg / "__init__.py").write_bytes(INIT_DOCSTRING.encode())
    return [out_dir / p for p in _generated_files(out_dir)]


def check(repo_root: Path = REPO_ROOT) -> list[str]:
    """Names of files that differ between the committed eat/ and a fresh generation (empty = in sync)."""
    with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
        tmp_root = Path(tmp)
        generate(tmp_root)
        fresh = {p: (tmp_root / p).read_bytes() for p in _generated_files(tmp_root)}
    committed = {p: (repo_root / p).read_bytes() for p in _generated_files(repo_root)}
    differing = [
        p.as_posix() for p in sorted(fresh.keys() | committed.keys()) if fresh.get(p) != committed.get(p)
    ]
    return differing


def _write_in_place(repo_root: Path = REPO_ROOT) -> list[Path]:
    """Regenerate eat/ in the repo, removing generated files whose proto no longer exists."""
    before = set(_generated_files(repo_root))
    written = generate(repo_root)
    for stale in sorted(before - {p.relative_to(repo_root) for p in written}):
        (repo_root / stale).unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare a fresh generation with the committed eat/ files"
    )
    args = parser.parse_args(argv)
    if args.check:
        differing = check()
        if differing:
            print("generated code is out of date; run scripts/gen_proto.py. Differing files:")
            for name in differing:
                print(f"  {name}")
            return 1
        print("generated code is up to date")
        return 0
    for path in _write_in_place():
        print(path.relative_to(REPO_ROOT).as_posix())
    return 0


if __name__ == "__main__":
    sys.exit(main())
