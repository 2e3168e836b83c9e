#!/usr/bin/env python3
"""Generate the Python module and type stub of the Upstox feed's protobuf schema (providers/upstox/proto/).

    python scripts/gen_upstox_proto.py          # regenerate market_data_feed_v3_pb2.py and .pyi (`make proto`)
    python scripts/gen_upstox_proto.py --check  # exit 1 if the committed files differ from what the .proto gives

Uses protoc from grpcio-tools and the stub generator mypy-protobuf (both pinned in pyproject.toml, dev extra), so
every machine generates the same bytes; the generated module checks at import that the protobuf runtime is at least
the version it was generated for."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "providers" / "upstox" / "proto"
PROTO = "market_data_feed_v3.proto"
OUTPUTS = ("market_data_feed_v3_pb2.py", "market_data_feed_v3_pb2.pyi")


def generate(out: Path) -> None:
    from grpc_tools import protoc  # type: ignore[import-untyped]  # dev dependency: only to (re)generate

    # The type stub comes from mypy-protobuf's plugin (installed beside this Python): unlike protoc's own --pyi_out
    # it passes mypy --strict.
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    status = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--plugin=protoc-gen-mypy={plugin}",
            f"--python_out={out}",
            f"--mypy_out={out}",
            str(PROTO_DIR / PROTO),
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [name for name in OUTPUTS if (Path(tmp) / name).read_bytes() != _read(PROTO_DIR / name)]
        if args.check:
            for name in stale:
                print(f"{PROTO_DIR / name} is out of date with {PROTO}: run `make proto`", file=sys.stderr)
            return 1 if stale else 0
        for name in stale:
            (PROTO_DIR / name).write_bytes((Path(tmp) / name).read_bytes())
            print(f"wrote {PROTO_DIR / name}")
    return 0


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


if __name__ == "__main__":
    sys.exit(main())
