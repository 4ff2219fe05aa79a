"""The rules of the house, checked by walking the source with `ast` (nothing is imported).

Every layer only calls the layers below it (see ARCHITECTURE.md), so:
1. `server/web/` handles HTTP: it imports no sqlite3, sqlite_utils, torch or timm, holds no SQL.
2. Only `server/store/` runs SQL: nowhere else a `.execute(`/`.query(` call or an SQL string.
3. `server/learner/` never imports flask: a GPU worker must not need the web stack.
4. `strategies/` never imports `server`: strategies are plain functions over arrays.
5. No import cycle between packages (each `server/<sub>/`, the root modules, `strategies`).
6. No source file over 400 lines: past that a module is usually two ideas.
7. Only `server/dataset/csv_writer.py` calls csv.writer/csv.DictWriter: every CSV the product
   writes goes through the one writer that quotes cells a spreadsheet would run as formulas.
Each test names its rule and lists every violation at once, as `file:line: what`.
Tests and bench scripts may read the database directly; they are not scanned.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
DYNAMIC_IMPORTS = {"importlib.import_module", "import_module", "__import__"}
SQL_CALLS = {"execute", "executemany", "executescript", "query"}
# An SQL *shape* after the verb, not the verb alone, so prose like "Select the class" is no hit.
SQL_AFTER_VERB = {
    # the list's first item, then what may follow it: "(", an operator, [AS x] FROM, ", ... FROM"
    "select": r"(DISTINCT\s+)?(\(|\d+\s*($|FROM\s)|[\w.*]+\s*([(+*/%|<>=-]|,.*?\bFROM\s"
              r"|(\s+AS\s+\w+)?\s+FROM\s))",
    "insert": r"(OR\s+\w+\s+)?INTO\s",
    "update": r"(OR\s+\w+\s+)?[\w.]+\s+SET\s",
    "delete": r"FROM\s",
    "create": r"(TEMP\s+|TEMPORARY\s+|UNIQUE\s+)?(TABLE|INDEX|VIEW|TRIGGER)\s",
    "drop": r"(TABLE|INDEX|VIEW|TRIGGER)\s",
    "alter": r"TABLE\s",
    "pragma": r"\w+",
    "with": r"\w+(\s*\([^)]*\))?\s+AS\s*\(\s*SELECT\s",
}
VERB_AND_REST = re.compile(r"\s*(?P<verb>\w+)\s+(?P<rest>.*)", re.DOTALL)


def source_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT).as_posix()}:{line}"


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` bodies: imports for type hints only."""
    blocks = [node for node in ast.walk(tree) if isinstance(node, ast.If)
              and ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}]
    return {id(inner) for block in blocks for stmt in block.body for inner in ast.walk(stmt)}


def imports_of(path: Path) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, under TYPE_CHECKING) for every import, at any depth."""
    parts = module_name(path).split(".")
    package = parts if path.name == "__init__.py" else parts[:-1]
    hidden = type_checking_only(parsed(path))
    found = []
    for node in ast.walk(parsed(path)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # `from server import web` imports server.web; `from flask import g`, flask
            names = [module] if node.module else []
            names += [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in DYNAMIC_IMPORTS:
            name = getattr(node.args[0], "value", None) if node.args else None  # str: a Constant
            names = [name] if isinstance(name, str) and not name.startswith(".") else []
        found += [(node.lineno, name, id(node) in hidden) for name in names]
    return sorted(found)


def forbidden_imports(folder: str, banned: set[str]) -> list[str]:
    found = [f"{where(path, line)}: imports {name.split('.')[0]}"
             for path in source_files(folder) for line, name, _ in imports_of(path)
             if name.split(".")[0] in banned]
    return list(dict.fromkeys(found))  # `from flask import g` is one import, not two


def docstring_ids(tree: ast.Module) -> set[int]:
    owners = [node for node in ast.walk(tree) if isinstance(
        node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return {id(owner.body[0].value) for owner in owners
            if owner.body and isinstance(owner.body[0], ast.Expr)}


def looks_like_sql(text: str) -> bool:
    match = VERB_AND_REST.match(text)
    verb = match["verb"] if match else ""
    # SQL is written SELECT or select; "Select ..." / "Delete ..." starts a sentence.
    if verb.lower() not in SQL_AFTER_VERB or not (verb.isupper() or verb.islower()):
        return False
    return bool(re.match(SQL_AFTER_VERB[verb.lower()], match["rest"], re.I | re.DOTALL))


def sql_in(path: Path) -> list[str]:
    """SQL string literals (f-strings by their constant parts) and SQL-running calls."""
    ignored = docstring_ids(parsed(path))  # and an f-string's parts: the f-string is read whole
    hits = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in SQL_CALLS:
                hits.append((node.lineno, f"calls .{node.func.attr}()"))
            continue
        if isinstance(node, ast.JoinedStr):
            ignored |= {id(value) for value in node.values}
            text = "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = "" if id(node) in ignored else node.value
        else:
            continue
        if looks_like_sql(text):
            hits.append((node.lineno, f"SQL {text.strip()[:50]!r}"))
    return [f"{where(path, line)}: {what}" for line, what in sorted(hits)]


def assert_no_violations(violations: list[str], rule: str) -> None:
    if violations:  # every violation at once, without pytest's repr of the list
        pytest.fail(f"{len(violations)} broken: {rule}\n" + "\n".join(violations), pytrace=False)


def test_web_imports_no_database_or_model_libraries_and_holds_no_sql():
    rule = "rule 1: server/web/ imports no sqlite3/sqlite_utils/torch/timm and holds no SQL"
    banned = {"sqlite3", "sqlite_utils", "torch", "timm"}
    violations = forbidden_imports("server/web", banned)
    violations += [hit for path in source_files("server/web") for hit in sql_in(path)]
    assert_no_violations(violations, rule)


def test_only_the_store_runs_sql():
    store = ROOT / "server" / "store"
    violations = [hit for path in source_files("server", "strategies")
                  if store not in path.parents for hit in sql_in(path)]
    assert_no_violations(violations, "rule 2: only server/store/ runs SQL")


def test_learner_never_imports_flask():
    banned = {"flask", "flask_login", "flask_wtf", "htmx_flask"}
    violations = forbidden_imports("server/learner", banned)
    assert_no_violations(violations, "rule 3: server/learner/ never imports flask")


def test_strategies_never_import_server():
    violations = forbidden_imports("strategies", {"server"})
    assert_no_violations(violations, "rule 4: strategies/ never imports server")


def package_of(module: str, subpackages: set[str]) -> str | None:
    """`server.<sub>`, `strategies`, or `server` for the root modules (config, projects ...).
    The factory `server/app.py` (create_app wires web, jobs and store) and `server/__main__.py`
    are expected to import everything, so each is a top node of its own, not part of the root
    (or root -> web -> root would be a cycle); two nodes, as the CLI builds the app and
    `__main__` runs the CLI."""
    parts = module.split(".") + [""]
    if parts[0] != "server":
        return "strategies" if parts[0] == "strategies" else None
    return f"server.{parts[1]}" if parts[1] in subpackages | {"app", "__main__"} else "server"


def package_edges() -> dict[tuple[str, str], str]:
    """(importer, imported) -> the first file:line making that edge."""
    subpackages = {path.parent.name for path in (ROOT / "server").glob("*/__init__.py")}
    edges: dict[tuple[str, str], str] = {}
    for path in source_files("server", "strategies"):
        source = package_of(module_name(path), subpackages)
        for line, name, type_only in imports_of(path):
            target = package_of(name, subpackages)
            if target and target != source and not type_only:
                edges.setdefault((source, target), where(path, line))
    return edges


def shortest_paths_from(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    paths, queue = {start: [start]}, deque([start])
    while queue:
        node = queue.popleft()
        for following in sorted(graph.get(node, ())):
            if following not in paths:
                paths[following] = paths[node] + [following]
                queue.append(following)
    return paths


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest cycle through each edge that lies on a cycle, skipping edges an earlier
    cycle already showed: every edge to break appears, without every longer combination."""
    cycles, shown = [], set()
    for source in sorted(graph):
        for target in sorted(graph[source]):
            back = shortest_paths_from(graph, target).get(source)
            if back and (source, target) not in shown:
                cycle = [source] + back[:-1]
                shown |= set(zip(cycle, cycle[1:] + cycle[:1]))
                cycles.append(cycle)
    return cycles


def test_no_import_cycle_between_packages():
    edges = package_edges()
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    violations = [
        " -> ".join(cycle + cycle[:1]) + "".join(
            f"\n    {a} -> {b}: {edges[a, b]}" for a, b in zip(cycle, cycle[1:] + cycle[:1]))
        for cycle in import_cycles(graph)
    ]
    assert_no_violations(violations, "rule 5: no import cycle between packages")


def test_no_source_file_is_over_400_lines():
    lengths = {path: len(path.read_text(encoding="utf-8").splitlines())
               for path in source_files("server", "strategies")}
    violations = [f"{where(path, MAX_LINES + 1)}: {lines} lines"
                  for path, lines in lengths.items() if lines > MAX_LINES]
    assert_no_violations(violations, f"rule 6: no source file over {MAX_LINES} lines")


CSV_WRITERS = {"writer", "DictWriter"}


def csv_writers_in(path: Path) -> list[str]:
    """`csv.writer(...)`/`csv.DictWriter(...)` uses and `from csv import writer/DictWriter`."""
    hits = []
    for node in ast.walk(parsed(path)):
        if (isinstance(node, ast.Attribute) and node.attr in CSV_WRITERS
                and isinstance(node.value, ast.Name) and node.value.id == "csv"):
            hits.append((node.lineno, f"csv.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "csv" and not node.level:
            hits += [(node.lineno, f"from csv import {alias.name}")
                     for alias in node.names if alias.name in CSV_WRITERS | {"*"}]
    return [f"{where(path, line)}: {what}" for line, what in sorted(hits)]


def test_only_the_csv_writer_module_writes_csv():
    allowed = ROOT / "server" / "dataset" / "csv_writer.py"
    violations = [hit for path in source_files("server", "strategies") if path != allowed
                  for hit in csv_writers_in(path)]
    assert_no_violations(violations, "rule 7: only server/dataset/csv_writer.py writes CSV")
