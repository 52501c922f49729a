"""Generate the Python gRPC code in gateway/wire/ from the .proto files in proto/.

    python proto/generate.py            # (re)write gateway/wire/
    python proto/generate.py --check    # exit 1 when gateway/wire/ differs from a fresh build

protoc writes absolute imports (``import x_pb2``); they are rewritten to package imports
(``from gateway.wire import x_pb2``) so the generated modules live inside our package.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
WIRE_DIR = ROOT / "gateway" / "wire"
PACKAGE = "gateway.wire"
HEADER = '"""Generated from proto/ by proto/generate.py; do not edit."""\n'


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    local = {p.stem for p in protos}
    pattern = re.compile(r"^import (\w+)_pb2(_grpc)? as", re.MULTILINE)
    for path in out_dir.glob("*.py*"):
        text = pattern.sub(
            lambda m: (
                f"from {PACKAGE} import {m.group(1)}_pb2{m.group(2) or ''} as"
                if m.group(1) in local
                else m.group(0)
            ),
            path.read_text(),
        )
        text = re.sub(r"^from (\w+)_pb2 import", _from_import(local), text, flags=re.MULTILINE)
        path.write_text(text)
    (out_dir / "__init__.py").write_text(HEADER)
    return sorted(out_dir.iterdir())


def _from_import(local: set[str]):  # type: ignore[no-untyped-def]
    def replace(match: re.Match[str]) -> str:
        stem = match.group(1)
        return f"from {PACKAGE}.{stem}_pb2 import" if stem in local else match.group(0)

    return replace


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when gateway/wire/ drifted")
    args = parser.parse_args()
    if not args.check:
        WIRE_DIR.mkdir(exist_ok=True)
        for old in WIRE_DIR.glob("*_pb2*.py*"):
            old.unlink()
        generate(WIRE_DIR)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        names = {p.name for p in fresh}
        current = {p.name for p in WIRE_DIR.glob("*") if p.is_file()}
        drift = sorted(names ^ current)
        drift += [
            n for n in sorted(names & current) if not filecmp.cmp(Path(tmp) / n, WIRE_DIR / n, shallow=False)
        ]
        if drift:
            print("gateway/wire/ differs from proto/: " + ", ".join(drift), file=sys.stderr)
            print("run: python proto/generate.py", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
