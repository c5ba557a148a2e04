"""Generate the Python contracts in libs/common/src/meridian/v1 from proto/meridian/v1/*.proto.

The generated files are committed so that a service needs no protoc at run time; a unit test
regenerates them into a temporary directory and fails when they differ, so they can never drift
from the .proto files.

Usage: python scripts/gen_proto.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "proto"
DEFAULT_OUT = REPO / "libs" / "common" / "src"


def proto_files() -> list[Path]:
    """All contract files, sorted so the generated output does not depend on directory order."""
    return sorted((PROTO_ROOT / "meridian" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc for every contract; return the generated Python files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code} for {files}")
    pkg = out_dir / "meridian" / "v1"
    for init in (out_dir / "meridian" / "__init__.py", pkg / "__init__.py"):
        init.write_text('"""Generated protobuf contracts (see proto/). Do not edit."""\n')
    return sorted(pkg.glob("*_pb2.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ns = parser.parse_args()
    generated = generate(ns.out)
    print(f"generated {len(generated)} files into {ns.out / 'meridian' / 'v1'}", file=sys.stderr)


if __name__ == "__main__":
    main()
