"""Layering rules, checked on the source: pure cores stay pure and only the codec knows protobuf."""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "cloudburst"
GENERATED = PACKAGE / "protocol" / "wire"
#: Modules allowed to import generated protobuf code.
PB2_USERS = {PACKAGE / "protocol" / "codec.py"} | set((PACKAGE / "shared" / "proto").glob("*.py"))


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package_modules():
    return [p for p in PACKAGE.rglob("*.py") if GENERATED not in p.parents]


def test_only_the_codec_and_the_compatibility_shim_import_generated_code():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in package_modules()
        if path not in PB2_USERS and any(name.endswith("_pb2") for name in imports_of(path))
    ]
    assert offenders == []


def test_lattices_are_a_stdlib_only_leaf():
    for path in (PACKAGE / "lattices").glob("*.py"):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name.startswith("cloudburst.lattices") or top == "__future__", (
                f"{path.name} imports {name}"
            )


def test_pure_cores_do_not_touch_sockets_or_the_clock():
    cores = [p for p in package_modules() if p.name in ("state.py", "policy.py", "ring.py", "retry.py")]
    assert cores, "no core modules found"
    for path in cores:
        forbidden = {n for n in imports_of(path) if n.split(".")[0] in ("zmq", "socket", "time", "random", "asyncio")}
        assert forbidden == set(), f"{path.relative_to(PACKAGE)} imports {forbidden}"
