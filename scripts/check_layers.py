"""Check the import layers of r1pipe: no library module imports a stage, no import cycles.

How to run
    ``python scripts/check_layers.py`` prints the layer table, the R1 violations and the R2
    cycles, and exits 1 if R1 or R2 is violated (0 otherwise). ``--json`` prints the same as
    one JSON object. ``--root DIR`` checks another checkout (default: this one);
    ``--include-type-checking`` also counts the imports under ``if TYPE_CHECKING:`` in R2/R3.
    Only the standard library is needed; nothing is imported from r1pipe (files are parsed
    with ``ast``), so a broken or half-refactored tree can still be checked.

What is checked
    R1  Nothing under ``r1pipe/`` except ``r1pipe/stages/`` and ``r1pipe/cli.py`` imports
        ``r1pipe.stages`` (any submodule), and neither does anything under ``scripts/`` or
        ``tests/dist/``. Every import counts here, ``if TYPE_CHECKING:`` ones included: a
        library must not depend on a stage even for its types.
    R2  The module import graph of ``r1pipe/`` has no cycles. Every import counts, at any
        level (module level, inside functions and methods, in class bodies), except those
        under ``if TYPE_CHECKING:`` (they never run, so they cannot make an import cycle),
        unless ``--include-type-checking``. Each strongly connected component of more than
        one module (or a module importing itself) is reported, with every elementary cycle
        in it (up to ``MAX_CYCLES_PER_SCC``) and the file:line of each import on the cycle.
    R3  (informational) The folder-level diagram: for each layer (a folder such as
        ``training/``, or a top-level module such as ``models.py``) the layers it imports,
        with the number of module-to-module imports and how many of them are function-level
        (``fn``). An import that the target diagram ``TARGET`` does not allow is marked
        ``!``; those marks are listed but do not change the exit status.

How imports are resolved
    ``import r1pipe.x.y`` is an edge to ``r1pipe.x.y`` (the longest prefix that is a module
    of the tree); a package ``r1pipe.x`` is its ``r1pipe/x/__init__.py``. ``from r1pipe.x
    import y`` is an edge to ``r1pipe.x.y`` when that is a module, else to ``r1pipe.x``.
    Relative imports are resolved against the importing module. ``importlib.import_module``
    and ``__import__`` with a literal string count like ``import``. The parent packages that
    Python initialises on the way (``r1pipe/x/__init__.py`` for ``r1pipe.x.y``) are not
    edges: a package importing its own submodules would otherwise always be a "cycle".
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "r1pipe"
# Files that may import stages (R1), relative to the root; folders end with "/".
STAGE_IMPORTERS = (f"{PACKAGE}/stages/", f"{PACKAGE}/cli.py")
# Where R1 also looks, besides the package.
R1_EXTRA_DIRS = ("scripts", "tests/dist")
MAX_CYCLES_PER_SCC = 50

# The layers top-down, as the table lists them (a layer not named here comes last).
LAYER_ORDER = (
    "cli.py", "__main__.py", "stages/", "rl/",
    "evaluation.py", "report.py", "benchmarks.py", "rejection_sampler.py", "rejection.py",
    "preflight.py", "run_dir.py", "models.py", "training/", "generation/", "rewards/", "data/",
    "config/", "errors.py", "__init__.py",
)  # fmt: skip
_TOP = {
    "evaluation.py", "report.py", "benchmarks.py", "rejection_sampler.py", "rejection.py",
    "preflight.py", "run_dir.py", "models.py",
}  # fmt: skip
_LIB = {"training/", "generation/", "rewards/", "data/"}
ANY = frozenset(LAYER_ORDER)
# The target diagram (issue 13): layer -> the layers it may import. Informational (the "!"
# marks of R3); R1 and R2 are what must hold. config/ may also import any layer lazily
# (function level) when that makes no cycle: see LAZY_ANYWHERE.
TARGET: dict[str, frozenset[str]] = {
    "cli.py": ANY,
    "__main__.py": frozenset({"cli.py"}),
    "stages/": ANY - {"cli.py", "__main__.py"},
    "rl/": frozenset(_LIB | {"config/", "models.py", "errors.py", "evaluation.py"}),
    **{top: frozenset(_TOP | _LIB | {"config/", "errors.py"}) for top in _TOP},
    **{lib: frozenset(_LIB | {"config/", "errors.py", "models.py"}) for lib in _LIB},
    # metrics.jsonl is written atomically with run_dir's helper
    "training/": frozenset(_LIB | {"config/", "errors.py", "models.py", "run_dir.py"}),
    "config/": frozenset({"errors.py"}),
    "errors.py": frozenset(),
    "__init__.py": frozenset(),
}
LAZY_ANYWHERE = frozenset({"config/"})


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` (module, or file for non-package files)."""

    source: str
    target: str  # the resolved module of the tree
    path: str  # the importing file, relative to the root
    line: int
    scope: str  # "module", "function" or "type-checking"


def package_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package under ``root``: dotted name -> file."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if all(part.isidentifier() for part in parts):
            modules[".".join(parts)] = path
    return modules


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a module of the tree, else None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _literal_import(node: ast.Call) -> str | None:
    """The module of ``importlib.import_module("x")`` / ``__import__("x")``, literal only."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def _walk(node: ast.AST, scope: str) -> Iterator[tuple[ast.AST, str]]:
    """Every node below ``node`` with its scope (module / function / type-checking)."""
    for child in ast.iter_child_nodes(node):
        inner = scope
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inner = "type-checking" if scope == "type-checking" else "function"
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            yield child, scope
            for stmt in child.body:
                yield stmt, "type-checking"
                yield from _walk(stmt, "type-checking")
            for stmt in child.orelse:
                yield stmt, scope
                yield from _walk(stmt, scope)
            continue
        yield child, scope
        yield from _walk(child, inner)


def file_imports(
    path: Path, root: Path, modules: dict[str, Path], package: str = PACKAGE
) -> list[Import]:
    """The imports of one file that resolve to modules of the package, in file order."""
    rel = path.relative_to(root).as_posix()
    source = next((name for name, p in modules.items() if p == path), rel)
    is_package = path.name == "__init__.py"
    found = []

    def add(name: str | None, node: ast.AST, scope: str) -> None:
        target = resolve(name, modules) if name else None
        if target is not None:
            found.append(Import(source, target, rel, node.lineno, scope))

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node, scope in _walk(tree, "module"):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, scope)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: only meaningful inside the package
                if source == rel:
                    continue
                base = source.split(".")
                drop = node.level - 1 if is_package else node.level
                if drop >= len(base):
                    continue
                base = base[: len(base) - drop]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            for alias in node.names:
                full = f"{stem}.{alias.name}"
                add(full if full in modules else stem, node, scope)
        elif isinstance(node, ast.Call):
            add(_literal_import(node), node, scope)
    # One edge per (line, target): ``from x import a, b`` of one module is one import.
    unique = dict.fromkeys(imp for imp in found if imp.target.split(".")[0] == package)
    return list(unique)


def import_graph(
    root: Path, package: str = PACKAGE, include_type_checking: bool = False
) -> dict[str, dict[str, list[Import]]]:
    """module -> imported module -> the imports making that edge (self-imports kept)."""
    modules = package_modules(root, package)
    graph: dict[str, dict[str, list[Import]]] = {name: {} for name in modules}
    for path in modules.values():
        for imp in file_imports(path, root, modules, package):
            if imp.scope == "type-checking" and not include_type_checking:
                continue
            graph[imp.source].setdefault(imp.target, []).append(imp)
    return graph


def strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return sorted(components)


def elementary_cycles(
    graph: dict[str, dict[str, list[Import]]], members: list[str], limit: int
) -> tuple[list[list[str]], bool]:
    """The elementary cycles inside one component, each from its smallest module.

    Returns (cycles, truncated). Each cycle is found once: from its smallest member ``s``,
    through members greater than ``s`` only.
    """
    inside = set(members)
    cycles: list[list[str]] = []
    for start in members:
        path = [start]
        work = [iter(sorted(t for t in graph[start] if t in inside and t >= start))]
        while work:
            nxt = next(work[-1], None)
            if nxt is None:
                work.pop()
                path.pop()
            elif nxt == start:
                cycles.append(list(path))
                if len(cycles) >= limit:
                    return cycles, True
            elif nxt not in path:
                path.append(nxt)
                work.append(iter(sorted(t for t in graph[nxt] if t in inside and t >= start)))
    return cycles, False


def find_cycles(
    graph: dict[str, dict[str, list[Import]]], limit: int = MAX_CYCLES_PER_SCC
) -> list[dict]:
    """R2: each component that is a cycle, with its elementary cycles and their imports."""
    found = []
    for members in strongly_connected(graph):
        if len(members) == 1 and members[0] not in graph[members[0]]:
            continue
        cycles, truncated = elementary_cycles(graph, members, limit)
        found.append(
            {
                "modules": members,
                "cycles": [
                    {
                        "modules": cycle,
                        "imports": [
                            asdict(graph[a][b][0])
                            for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True)
                        ],
                    }
                    for cycle in cycles
                ],
                "truncated": truncated,
            }
        )
    return found


def _allowed_to_import_stages(rel: str) -> bool:
    return any(rel.startswith(p) if p.endswith("/") else rel == p for p in STAGE_IMPORTERS)


def stage_imports(root: Path, package: str = PACKAGE) -> list[Import]:
    """R1: the imports of ``<package>.stages`` from files that may not import stages."""
    modules = package_modules(root, package)
    stages = f"{package}.stages"
    files = list(modules.values())
    for extra in R1_EXTRA_DIRS:
        files += sorted((root / extra).rglob("*.py")) if (root / extra).is_dir() else []
    violations = []
    for path in files:
        if _allowed_to_import_stages(path.relative_to(root).as_posix()):
            continue
        for imp in file_imports(path, root, modules, package):
            if imp.target == stages or imp.target.startswith(stages + "."):
                violations.append(imp)
    return violations


def layer_of(module: str, modules: dict[str, Path], package: str = PACKAGE) -> str:
    """``r1pipe.training.engine`` -> ``training/``; ``r1pipe.models`` -> ``models.py``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    if len(parts) > 2 or modules[module].name == "__init__.py":
        return parts[1] + "/"
    return parts[1] + ".py"


def layer_table(
    graph: dict[str, dict[str, list[Import]]], root: Path, package: str = PACKAGE
) -> dict[str, dict[str, dict[str, int]]]:
    """R3: layer -> imported layer -> counts of module pairs (module imports module).

    Counts: ``edges`` all pairs; ``function`` the pairs whose every import is inside a
    function; ``cycle`` the pairs whose two modules are on a common import cycle (R2).
    """
    modules = package_modules(root, package)
    component = {m: i for i, ms in enumerate(strongly_connected(graph)) if len(ms) > 1 for m in ms}
    table: dict[str, dict[str, dict[str, int]]] = {layer_of(m, modules, package): {} for m in graph}
    for source, targets in graph.items():
        src = layer_of(source, modules, package)
        for target, imports in targets.items():
            dst = layer_of(target, modules, package)
            if dst == src:
                continue
            cell = table[src].setdefault(dst, {"edges": 0, "function": 0, "cycle": 0})
            cell["edges"] += 1
            cell["function"] += all(imp.scope == "function" for imp in imports)
            cell["cycle"] += component.get(source, -1) == component.get(target, -2)
    return {
        layer: {dst: table[layer][dst] for dst in sorted(table[layer], key=_layer_key)}
        for layer in sorted(table, key=_layer_key)
    }


def _layer_key(layer: str) -> tuple[int, str]:
    return (LAYER_ORDER.index(layer), "") if layer in LAYER_ORDER else (len(LAYER_ORDER), layer)


def target_deviations(table: dict[str, dict[str, dict[str, int]]]) -> list[dict]:
    """The layer imports that the target diagram does not allow (informational)."""
    deviations = []
    for src, targets in table.items():
        allowed = TARGET.get(src)
        if allowed is None:
            continue
        for dst, cell in targets.items():
            lazy_ok = src in LAZY_ANYWHERE and cell["function"] == cell["edges"] > 0
            lazy_ok = lazy_ok and not cell["cycle"]
            if dst not in allowed and not lazy_ok:
                deviations.append({"layer": src, "imports": dst, **cell})
    return deviations


def check(root: Path = ROOT, package: str = PACKAGE, include_type_checking: bool = False) -> dict:
    """Run R1, R2 and R3 over the tree at ``root``: a JSON-ready dict, ``ok`` the verdict."""
    graph = import_graph(root, package, include_type_checking)
    violations = stage_imports(root, package)
    cycles = find_cycles(graph)
    table = layer_table(graph, root, package)
    return {
        "ok": not violations and not cycles,
        "root": str(root),
        "type_checking_imports": "included" if include_type_checking else "excluded",
        "modules": len(graph),
        "edges": sum(len(targets) for targets in graph.values()),
        "layers": table,
        "target_deviations": target_deviations(table),
        "r1_violations": [asdict(imp) for imp in violations],
        "r2_cycles": cycles,
    }


def format_report(result: dict) -> str:
    """The human-readable report of ``check``."""
    lines = [
        f"r1pipe import layers: {result['modules']} modules, {result['edges']} module imports "
        f"(TYPE_CHECKING imports {result['type_checking_imports']}) in {result['root']}",
        "",
        "R3 layer -> imported layers (module pairs; fn: of them function-level only;"
        " cyc: on an R2 cycle; !: not allowed by the target diagram)",
    ]
    flagged = {(d["layer"], d["imports"]) for d in result["target_deviations"]}
    width = max(len(layer) for layer in result["layers"]) + 2
    for layer, targets in result["layers"].items():
        cells = []
        for dst, cell in targets.items():
            fn = f", fn {cell['function']}" if cell["function"] else ""
            cyc = f", cyc {cell['cycle']}" if cell["cycle"] else ""
            mark = "!" if (layer, dst) in flagged else ""
            cells.append(f"{mark}{dst} ({cell['edges']}{fn}{cyc})")
        rows = [""]
        for cell in cells or ["-"]:
            if rows[-1] and width + len(rows[-1]) + len(cell) > 98:
                rows.append("")
            rows[-1] += ("  " if rows[-1] else "") + cell
        lines.append(f"  {layer:<{width}}{rows[0]}")
        lines += [f"  {'':<{width}}{row}" for row in rows[1:]]
    lines.append("")
    violations = result["r1_violations"]
    lines.append(f"R1 imports of r1pipe.stages outside stages/ and cli.py: {len(violations)}")
    for imp in violations:
        lines.append(f"  {imp['path']}:{imp['line']} ({imp['scope']}) imports {imp['target']}")
    lines.append("")
    cycles = result["r2_cycles"]
    lines.append(f"R2 import cycles: {len(cycles)} group(s) of mutually importing modules")
    for n, group in enumerate(cycles, 1):
        more = " (list truncated)" if group["truncated"] else ""
        lines.append(
            f"  group {n}: {len(group['modules'])} modules, "
            f"{len(group['cycles'])} elementary cycle(s){more}: {', '.join(group['modules'])}"
        )
        for cycle in group["cycles"]:
            lines.append("    cycle: " + " -> ".join(cycle["modules"] + cycle["modules"][:1]))
            for imp in cycle["imports"]:
                lines.append(
                    f"      {imp['path']}:{imp['line']} ({imp['scope']}) imports {imp['target']}"
                )
    lines.append("")
    failed = [rule for rule, bad in (("R1", violations), ("R2", cycles)) if bad]
    lines.append("FAILED: " + " and ".join(failed) if failed else "OK")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to check")
    parser.add_argument(
        "--include-type-checking",
        action="store_true",
        help="count imports under `if TYPE_CHECKING:` in the graph (R2, R3)",
    )
    args = parser.parse_args(argv)
    result = check(args.root.resolve(), include_type_checking=args.include_type_checking)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
