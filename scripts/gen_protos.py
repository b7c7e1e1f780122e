"""Regenerate the protobuf modules under src/cloudburst/protocol/wire.

Run with the pinned dev tools (grpcio-tools, mypy-protobuf) so the output is byte-for-byte reproducible;
CI regenerates and fails on any difference from what is committed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
WIRE = SRC / "cloudburst" / "protocol" / "wire"


def main() -> int:
    protos = sorted(p.relative_to(SRC).as_posix() for p in WIRE.glob("*.proto"))
    for stale in [*WIRE.glob("*_pb2.py"), *WIRE.glob("*_pb2.pyi")]:
        stale.unlink()
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    if plugin is None:
        print("protoc-gen-mypy not found next to this interpreter; install the dev extras", file=sys.stderr)
        return 1
    args = [
        "grpc_tools.protoc",
        f"--proto_path={SRC}",
        f"--python_out={SRC}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--mypy_out=quiet:{SRC}",
        *protos,
    ]
    return protoc.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
