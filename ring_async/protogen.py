"""Regenerates the checked-in gRPC code of ``ring_async.v1`` from ``proto/ring_async/v1/*.proto``.

The generated modules are committed so that a plain ``pip install`` needs no build step; ``make proto`` (this module)
rewrites them after a .proto changes, and ``tests/test_proto.py`` fails while the two disagree. Output is byte-identical
only with the grpcio-tools version pinned in the ``test`` extra, which is why that pin is exact.

    python -m ring_async.protogen              # rewrite ring_async/v1/ in this checkout
    python -m ring_async.protogen --out DIR    # write DIR/ring_async/v1/ instead (the staleness test does this)
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE_DIR = Path("ring_async") / "v1"
# What protoc writes for each .proto; anything else in ring_async/v1/ (the hand-written __init__.py) is left alone.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class ProtogenError(RuntimeError):
    """protoc is missing or refused the .proto files."""


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    files = sorted((proto_root / PACKAGE_DIR).glob("*.proto"))
    if not files:
        raise ProtogenError(f"no .proto files under {proto_root / PACKAGE_DIR} (generation needs a source checkout)")
    return files


def generated_names(proto_root: Path = PROTO_ROOT) -> list[str]:
    """File names protoc produces in ``ring_async/v1/`` for the current .proto files."""
    return sorted(f"{p.stem}{suffix}" for p in proto_files(proto_root) for suffix in GENERATED_SUFFIXES)


def generate(out_root: Path = REPO_ROOT, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc on every .proto; writes ``out_root/ring_async/v1/*`` and returns the files it wrote."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise ProtogenError("grpcio-tools is not installed: pip install -e '.[test]'") from None
    out_root = Path(out_root)
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    # protoc's own copy of the well-known types (google/protobuf/*.proto) ships inside grpc_tools.
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p) for p in proto_files(proto_root)),
    ]
    if protoc.main(args) != 0:
        raise ProtogenError(f"protoc failed on {proto_root / PACKAGE_DIR} (its messages are above)")
    return [out_root / PACKAGE_DIR / name for name in generated_names(proto_root)]


def stale_files(checkout_root: Path, fresh_root: Path) -> list[str]:
    """Generated files in ``checkout_root`` that differ from, are missing from, or are not in ``fresh_root``."""
    checked_in = {p.name for p in (checkout_root / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
    fresh = {p.name for p in (fresh_root / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
    stale = sorted(checked_in ^ fresh)
    for name in sorted(checked_in & fresh):
        if (checkout_root / PACKAGE_DIR / name).read_bytes() != (fresh_root / PACKAGE_DIR / name).read_bytes():
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ring_async.protogen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="write DIR/ring_async/v1/ (default: this checkout)")
    args = parser.parse_args(argv)
    try:
        if args.out.resolve() == REPO_ROOT:
            # Files of a deleted .proto would otherwise linger and keep importing.
            current = set(generated_names())
            for path in (REPO_ROOT / PACKAGE_DIR).iterdir():
                if path.name.endswith(GENERATED_SUFFIXES) and path.name not in current:
                    path.unlink()
        written = generate(args.out)
    except ProtogenError as err:
        print(f"protogen: {err}", file=sys.stderr)
        return 1
    print(f"protogen: wrote {len(written)} files under {args.out / PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
