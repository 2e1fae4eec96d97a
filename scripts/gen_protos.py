"""Generate exchange/_proto from proto/ with the pinned grpcio-tools and mypy-protobuf.

This script is the only producer of the committed generated code; the test
`tests/unit/test_generated_code.py` runs it into a temporary folder and fails on
any difference, so the committed code can never drift from the contract.

Usage:
    python scripts/gen_protos.py            # regenerate exchange/_proto in place
    python scripts/gen_protos.py --out DIR  # generate into DIR (for the check)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = "exchange._proto"
DEFAULT_OUT = ROOT / "exchange" / "_proto"

# protoc and mypy-protobuf write absolute imports ("from exchange.v1 import
# envelope_pb2"); the generated modules live under a private package.
_IMPORT = re.compile(r"^from exchange\.v1 import", re.MULTILINE)


def _protos() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def _rewrite_imports(out: Path) -> None:
    for path in out.rglob("*.py*"):
        path.write_text(_IMPORT.sub(f"from {PACKAGE}.exchange.v1 import", path.read_text()))


def generate(out: Path) -> None:
    """Generate every proto under proto/ into `out` (replaced entirely)."""
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--python_out={staging}",
            f"--grpc_python_out={staging}",
            f"--mypy_out={staging}",
            f"--mypy_grpc_out={staging}",
            *[str(p.relative_to(PROTO_ROOT)) for p in _protos()],
        ]
        # protoc finds the mypy plugins on PATH, next to this interpreter.
        env_path = str(Path(sys.executable).parent)
        result = subprocess.run(
            args,
            check=False,
            cwd=PROTO_ROOT,
            env={"PATH": env_path + ":/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            sys.exit(f"protoc failed:\n{result.stderr}")
        _rewrite_imports(staging)
        for package_dir in [staging, *[p for p in staging.rglob("*") if p.is_dir()]]:
            (package_dir / "__init__.py").touch()
        (staging / "__init__.py").write_text(
            '"""Generated from proto/ by scripts/gen_protos.py; do not edit."""\n'
        )
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staging, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
