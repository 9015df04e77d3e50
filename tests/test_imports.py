"""The import rule of docs/architecture.md: a package imports only itself and the rows below it."""

from __future__ import annotations

import ast
import subprocess
import sys
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "landmeta"


def layers() -> dict[str, int]:
    """Top-level package or module name -> row in the diagram (0 = top)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"## Import rule\n.*?```text\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no '## Import rule' diagram"
    rows = [line for line in block.group(1).splitlines() if line.strip()]
    return {name.strip(): i for i, line in enumerate(rows) for name in line.split(",")}


def top(module: str) -> str:
    """`landmeta.meta.maml` -> `meta`; `landmeta` itself -> ``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every landmeta import in a file, relative ones resolved."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = rel[:-1]  # the package a relative import starts from (for __init__ too)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ((base,) if base else ()))
            names = [f"{base}.{alias.name}" if base == "landmeta" else base for alias in node.names]
            found += [(node.lineno, name) for name in names if name.startswith("landmeta")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("landmeta")]
    return found


def test_every_import_goes_down() -> None:
    rows = layers()
    files = [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE]
    wrong = []
    for path in files:
        rel = path.relative_to(PACKAGE)
        own = rel.parts[0].removesuffix(".py")
        if own == "__main__":
            own = "cli"
        assert own in rows, f"landmeta/{rel}: package {own!r} is not in the import rule's diagram"
        for line, module in imports(path):
            if module == "landmeta.__version__":  # the package root holds the version, set before anything
                continue
            target = top(module)
            assert target in rows, f"landmeta/{rel}:{line}: imports {module}, not in the diagram"
            if target != own and rows[target] <= rows[own]:
                wrong.append(f"landmeta/{rel}:{line}: {own} imports {module} (row {rows[target]} is not below "
                             f"row {rows[own]})")
    assert not wrong, "\n".join(wrong)


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    """The walker finds relative and function-level imports (so the rule above cannot pass vacuously)."""
    probe = PACKAGE / "meta" / "_probe_for_test.py"
    probe.write_text("def f():\n    from ..evaluation import protocol\n    import landmeta.reporting.report\n")
    try:
        found = [m for _, m in imports(probe)]
    finally:
        probe.unlink()
    assert found == ["landmeta.evaluation", "landmeta.reporting.report"]


def test_public_api_resolves_and_import_stays_light() -> None:
    """`import landmeta` loads no torch; every name in `landmeta.__all__` is there on first use."""
    code = ("import sys, landmeta; assert 'torch' not in sys.modules; "
            "missing = [n for n in landmeta.__all__ if getattr(landmeta, n, None) is None]; "
            "assert not missing, missing; print(landmeta.adapt.__name__, landmeta.Checkpoint.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["adapt_checkpoint", "Checkpoint"]
