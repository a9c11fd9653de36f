"""Move ringsum's flat modules into the sub-packages that show its layers, and rewrite
every import and mention of them. Re-runnable: on a tree already laid out it changes
nothing, and on a tree that gained modules since (other branches merged first) it moves
what it knows, rewrites the imports of everything, and names the modules it left where
they are so a person can place them.

    python tools/relayout.py          # from the repository's root, in a git checkout

The layers, lowest first (.importlinter holds them to it): ``core`` (no ringsum imports),
``http`` | ``inputs`` | ``storage`` (independent of each other), ``config``, ``web``,
``serving``. docs/code.md draws them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ringsum"

# Each flat module's new package. What is not here stays where it is: the package root
# (``__init__``, ``config``, ``version``, and any module this table does not know yet).
LAYOUT: dict[str, tuple[str, ...]] = {
    "core": ("window", "units", "clock", "pending", "parent_death", "said_once"),
    "inputs": ("errors", "keys", "values", "params", "strict_json", "idempotency"),
    "http": ("edge", "http1", "wire", "access_log"),
    "web": (
        "app",
        "api",
        "auth",
        "cors",
        "dashboard",
        "observability",
        "problems",
        "state",
        "body_limit",
        "export",
        "shared_metrics",
        "process_metrics",
    ),
    "serving": ("cli", "server", "heartbeat", "sd_notify", "gc_policy"),
}
STAYS = {"__init__", "__main__", "config", "version"}
DATA = {"web": ("openapi.json", "static", "templates")}  # files the web package reads beside it

PACKAGE_DOCS = {
    "core": '''"""What every layer may use and that uses no other: the rolling window, durations and
sizes, the clock, an answer's wait for the disk, a child process's tie to its parent."""
''',
    "inputs": '''"""What a request says, read strictly and with no web framework: keys, values, query
parameters, JSON, the Idempotency-Key header. Mistakes are ``errors.py``'s plain
exceptions; the web layer turns them into problems."""
''',
    "http": '''"""HTTP/1.1 itself, with no Flask: the edge that reads each whole request with a
deadline and calls the WSGI app, the request reader, the problem document both sides
write, the access log."""
''',
    "web": '''"""The Flask app: routes, the dashboard, the token, CORS, problems, health and
Prometheus. The only layer that imports Flask."""
''',
    "serving": '''"""The process: ``python app.py``'s options, the supervisor and its workers, systemd's
notifications, the heartbeat, the GC schedule."""
''',
}

# Files whose text names modules by dotted name or by path; Python files also get their
# imports rewritten.
PYTHON_TREES = ("ringsum", "tests", "benchmarks", "tools")
TEXT_FILES = ("README.md", "Makefile", "pyproject.toml", "MANIFEST.in", "app.py", ".ci/run")
TEXT_TREES = ("docs", "deploy", "benchmarks", "tests", "tools", "ringsum")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".service", ".conf", ".sh", ".yml", ".yaml"}
SKIP = {Path(__file__).resolve()}
SKIP_PARTS = {"fixtures", "__pycache__"}  # fixtures were written by an older ringsum: never rewritten


def moves() -> dict[str, str]:
    """Old dotted module name -> new one."""
    return {
        f"{PACKAGE}.{module}": f"{PACKAGE}.{package}.{module}"
        for package, modules in LAYOUT.items()
        for module in modules
    }


def git(*args: str) -> None:
    subprocess.run(["git", *args], cwd=ROOT, check=True)


def move_files(report: list[str]) -> None:
    base = ROOT / PACKAGE
    for package, modules in LAYOUT.items():
        target = base / package
        target.mkdir(exist_ok=True)
        init = target / "__init__.py"
        if not init.exists():
            init.write_text(PACKAGE_DOCS[package])
            git("add", str(init.relative_to(ROOT)))
        for name in [f"{module}.py" for module in modules] + list(DATA.get(package, ())):
            old, new = base / name, target / name
            if old.exists() and not new.exists():
                git("mv", str(old.relative_to(ROOT)), str(new.relative_to(ROOT)))
                report.append(f"moved {old.relative_to(ROOT)} -> {new.relative_to(ROOT)}")
            elif old.exists():
                report.append(f"LEFT {old.relative_to(ROOT)}: {new.relative_to(ROOT)} exists too; merge them by hand")
    known = {module for modules in LAYOUT.values() for module in modules} | STAYS
    for path in sorted(base.glob("*.py")):
        if path.stem not in known:
            report.append(f"LEFT {path.relative_to(ROOT)} in the package root: not in tools/relayout.py's LAYOUT")


def current_modules() -> set[str]:
    names = set()
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.add(".".join(parts))
    return names


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts)


def package_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")


def resolve(package: str, level: int, module: str | None) -> str | None:
    base = package.split(".")
    if level - 1 >= len(base):
        return None  # above the top package: written for another place
    parts = base[: len(base) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def relative(package: str, target: str) -> str:
    """``target`` as a relative import from inside ``package`` (both under ringsum)."""
    here, there = package.split("."), target.split(".")
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    return "." * (len(here) - common + 1) + ".".join(there[common:])


def rewrite_imports(path: Path, text: str, moved: dict[str, str], modules: set[str]) -> str:
    """Relative imports (resolved where the file was written: its old place first, then
    its new one) and ``from package import module`` forms, pointed at the new places."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    in_package = path.relative_to(ROOT).parts[0] == PACKAGE
    here = package_of(path)
    old_here = here
    if in_package:
        old_module = {new: old for old, new in moved.items()}.get(module_of(path))
        if old_module is not None:
            old_here = old_module.rpartition(".")[0]
    known = set(moved) | modules
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            if not in_package:
                continue
            source = None
            for package in (old_here, here):
                candidate = resolve(package, node.level, node.module)
                if candidate is not None and (
                    candidate in known or any(f"{candidate}.{alias.name}" in known for alias in node.names)
                ):
                    source = candidate
                    break
            if source is None:
                continue
        elif node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
            source = node.module
        else:
            continue
        groups: dict[str, list[str]] = {}
        for alias in node.names:
            named = f"{alias.name} as {alias.asname}" if alias.asname else alias.name
            full = f"{source}.{alias.name}"
            if full in moved or full in modules:
                target = moved.get(full, full)
                groups.setdefault(target.rpartition(".")[0], []).append(named)
            else:
                groups.setdefault(moved.get(source, source), []).append(named)
        statements = []
        for target, names in groups.items():
            written = relative(here, target) if node.level or in_package else target
            statements.append(f"from {written} import {', '.join(names)}")
        names = ", ".join(f"{alias.name} as {alias.asname}" if alias.asname else alias.name for alias in node.names)
        if statements == [f"from {'.' * node.level}{node.module or ''} import {names}"]:
            continue  # already where it points
        indent = " " * node.col_offset
        edits.append(
            (
                node.lineno,
                node.col_offset,
                node.end_lineno or node.lineno,
                node.end_col_offset or 0,
                indent.join(statement + "\n" for statement in statements).rstrip("\n"),
            )
        )
    for start, column, end, end_column, replacement in sorted(edits, reverse=True):
        head = lines[start - 1][:column]
        tail = lines[end - 1][end_column:]
        lines[start - 1 : end] = [head + replacement + tail]
    return "".join(lines)


def rewrite_names(text: str, moved: dict[str, str], suffix: str) -> str:
    """Dotted names (``ringsum.window``, in strings, docs, ``-m`` commands) and paths
    (``ringsum/window.py``, the web package's data files)."""
    short = {old.removeprefix(PACKAGE + "."): new.removeprefix(PACKAGE + ".") for old, new in moved.items()}
    names = "|".join(sorted(map(re.escape, short), key=len, reverse=True))
    text = re.sub(rf"(?<![\w.]){PACKAGE}\.({names})(?!\w)", lambda match: f"{PACKAGE}.{short[match[1]]}", text)
    text = re.sub(
        rf"(?<![\w./]){PACKAGE}/({names})\.py\b",
        lambda match: f"{PACKAGE}/{short[match[1]].replace('.', '/')}.py",
        text,
    )
    for package, files in DATA.items():
        for name in files:
            text = re.sub(rf"(?<![\w./]){PACKAGE}/{re.escape(name)}\b", f"{PACKAGE}/{package}/{name}", text)
            text = text.replace(f'"{PACKAGE}" / "{name}"', f'"{PACKAGE}" / "{package}" / "{name}"')
            if suffix == ".toml":  # [tool.setuptools.package-data]: paths inside the package
                text = re.sub(rf'(?<=[\[,\s])"{re.escape(name)}(?=["/])', f'"{package}/{name}', text)
    return text


def targets() -> list[Path]:
    found = {ROOT / name for name in TEXT_FILES if (ROOT / name).is_file()}
    for tree in TEXT_TREES:
        for path in (ROOT / tree).rglob("*"):
            if path.is_file() and path.suffix in TEXT_SUFFIXES:
                found.add(path)
    return sorted(
        path for path in found if path.resolve() not in SKIP and not SKIP_PARTS & set(path.relative_to(ROOT).parts)
    )


def main() -> int:
    report: list[str] = []
    move_files(report)
    moved, modules = moves(), current_modules()
    changed = []
    for path in targets():
        text = path.read_text()
        new = text
        if path.suffix == ".py" and path.relative_to(ROOT).parts[0] in (*PYTHON_TREES, "app.py"):
            new = rewrite_imports(path, new, moved, modules)
        new = rewrite_names(new, moved, path.suffix)
        if new != text:
            path.write_text(new)
            changed.append(path)
    python = [str(path.relative_to(ROOT)) for path in changed if path.suffix == ".py"]
    if python:  # imports regrouped: sorted and formatted as the project's lint wants
        subprocess.run([sys.executable, "-m", "ruff", "check", "--fix", "--select", "I", "-q", *python], cwd=ROOT)
        subprocess.run([sys.executable, "-m", "ruff", "format", "-q", *python], cwd=ROOT)
    report += [f"rewrote {path.relative_to(ROOT)}" for path in changed]
    print("\n".join(report) or "nothing to do: already laid out")
    left = [line for line in report if line.startswith("LEFT")]
    if left:
        print(f"\n{len(left)} left for a person to place (see LEFT above)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
