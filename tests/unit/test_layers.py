"""The import layers (scripts/check_layers.py): the real tree, and the checker on fake trees."""

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_checker():
    path = ROOT / "scripts" / "check_layers.py"
    spec = importlib.util.spec_from_file_location("check_layers_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


layers = _load_checker()


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


# -- the real tree -------------------------------------------------------------------------


def test_r1_only_stages_and_cli_import_stages():
    violations = layers.stage_imports(ROOT)
    assert not violations, "\n".join(f"{v.path}:{v.line} imports {v.target}" for v in violations)


def test_r2_no_import_cycles():
    cycles = layers.find_cycles(layers.import_graph(ROOT))
    assert not cycles, "\n".join(", ".join(group["modules"]) for group in cycles)


def test_real_tree_is_read_whole():
    graph = layers.import_graph(ROOT)
    assert {"r1pipe.cli", "r1pipe.errors", "r1pipe.stages", "r1pipe.config"} <= set(graph)
    assert len(graph) > 40 and sum(map(len, graph.values())) > 100
    table = layers.layer_table(graph, ROOT)
    assert "stages/" in table["cli.py"] and "cli.py" in table["__main__.py"]


# -- the checker on fake trees -------------------------------------------------------------


def test_finds_a_cycle_through_a_function_level_import(tmp_path):
    root = _tree(
        tmp_path,
        {
            "r1pipe/__init__.py": "",
            "r1pipe/a.py": """\
                def f():
                    from r1pipe import b
                """,
            "r1pipe/b.py": "import r1pipe.a\n",
            "r1pipe/c.py": "from r1pipe.a import f\n",  # into the cycle, not on it
        },
    )
    graph = layers.import_graph(root)
    assert graph["r1pipe.a"]["r1pipe.b"][0].scope == "function"
    assert graph["r1pipe.b"]["r1pipe.a"][0].scope == "module"
    cycles = layers.find_cycles(graph)
    assert [group["modules"] for group in cycles] == [["r1pipe.a", "r1pipe.b"]]
    [cycle] = cycles[0]["cycles"]
    assert cycle["modules"] == ["r1pipe.a", "r1pipe.b"]
    assert [(imp["path"], imp["line"]) for imp in cycle["imports"]] == [
        ("r1pipe/a.py", 2),
        ("r1pipe/b.py", 1),
    ]
    result = layers.check(root)
    assert not result["ok"] and not result["r1_violations"]


def test_type_checking_imports_make_no_cycle_unless_asked(tmp_path):
    root = _tree(
        tmp_path,
        {
            "r1pipe/__init__.py": "",
            "r1pipe/a.py": "from r1pipe.b import X\n",
            "r1pipe/b.py": """\
                from typing import TYPE_CHECKING
                X = 1
                if TYPE_CHECKING:
                    from r1pipe.a import Y
                """,
        },
    )
    assert layers.find_cycles(layers.import_graph(root)) == []
    graph = layers.import_graph(root, include_type_checking=True)
    assert graph["r1pipe.b"]["r1pipe.a"][0].scope == "type-checking"
    assert [g["modules"] for g in layers.find_cycles(graph)] == [["r1pipe.a", "r1pipe.b"]]


def test_every_elementary_cycle_of_a_group_is_listed(tmp_path):
    # a -> b -> a and a -> c -> b -> a: one group, two cycles.
    root = _tree(
        tmp_path,
        {
            "r1pipe/__init__.py": "",
            "r1pipe/a.py": "import r1pipe.b\nimport r1pipe.c\n",
            "r1pipe/b.py": "import r1pipe.a\n",
            "r1pipe/c.py": "import r1pipe.b\n",
        },
    )
    [group] = layers.find_cycles(layers.import_graph(root))
    assert group["modules"] == ["r1pipe.a", "r1pipe.b", "r1pipe.c"]
    assert sorted(c["modules"] for c in group["cycles"]) == [
        ["r1pipe.a", "r1pipe.b"],
        ["r1pipe.a", "r1pipe.c", "r1pipe.b"],
    ]


def test_finds_a_library_module_importing_a_stage(tmp_path):
    root = _tree(
        tmp_path,
        {
            "r1pipe/__init__.py": "",
            "r1pipe/errors.py": "",
            "r1pipe/models.py": "from r1pipe.stages.cold import train\n",
            "r1pipe/data/__init__.py": "",
            "r1pipe/data/load.py": """\
                def load():
                    from ..stages import common
                """,
            "r1pipe/stages/__init__.py": "",
            "r1pipe/stages/common.py": "from r1pipe.errors import *\n",
            "r1pipe/stages/cold.py": "from r1pipe.stages.common import x\nimport r1pipe.models\n",
            "r1pipe/cli.py": "from r1pipe.stages import cold\n",  # allowed
            "scripts/bench.py": "import importlib\nimportlib.import_module('r1pipe.stages')\n",
            "tests/dist/step.py": "from r1pipe import stages\n",
            "tests/unit/test_x.py": "from r1pipe.stages import cold\n",  # not checked
        },
    )
    found = {(v.path, v.line, v.target, v.scope) for v in layers.stage_imports(root)}
    assert found == {
        ("r1pipe/models.py", 1, "r1pipe.stages.cold", "module"),
        ("r1pipe/data/load.py", 2, "r1pipe.stages.common", "function"),
        ("scripts/bench.py", 2, "r1pipe.stages", "module"),
        ("tests/dist/step.py", 1, "r1pipe.stages", "module"),
    }
    # models -> stages.cold -> models is also a cycle.
    result = layers.check(root)
    assert [g["modules"] for g in result["r2_cycles"]] == [["r1pipe.models", "r1pipe.stages.cold"]]
    assert result["layers"]["models.py"] == {"stages/": {"edges": 1, "function": 0, "cycle": 1}}
    assert {"layer": "models.py", "imports": "stages/"} in [
        {k: d[k] for k in ("layer", "imports")} for d in result["target_deviations"]
    ]


def test_resolution_of_names_modules_and_packages(tmp_path):
    root = _tree(
        tmp_path,
        {
            "r1pipe/__init__.py": "",
            "r1pipe/config/__init__.py": "from .schema import Config\n",
            "r1pipe/config/schema.py": "Config = 1\n",
            "r1pipe/x.py": """\
                import os
                import r1pipe.config
                from r1pipe.config import Config, schema
                from r1pipe.config.schema import Config as C
                import r1pipe.config.missing
                """,
        },
    )
    imports = layers.file_imports(
        root / "r1pipe/x.py", root, layers.package_modules(root), layers.PACKAGE
    )
    assert [(i.line, i.target) for i in imports] == [
        (2, "r1pipe.config"),  # a package: its __init__.py
        (3, "r1pipe.config"),  # a name of the package
        (3, "r1pipe.config.schema"),  # a module of the package
        (4, "r1pipe.config.schema"),
        (5, "r1pipe.config"),  # longest prefix that exists
    ]
    graph = layers.import_graph(root)
    assert set(graph["r1pipe.config"]) == {"r1pipe.config.schema"}  # relative import


def test_main_exit_status_and_json(tmp_path, capsys):
    clean = _tree(
        tmp_path / "clean",
        {"r1pipe/__init__.py": "", "r1pipe/errors.py": "", "r1pipe/cli.py": "import r1pipe.errors"},
    )
    assert layers.main(["--root", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "cli.py" in out and out.rstrip().endswith("OK")
    assert layers.main(["--root", str(clean), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["layers"]["cli.py"] == {
        "errors.py": {"edges": 1, "function": 0, "cycle": 0}
    }
    broken = _tree(
        tmp_path / "broken",
        {
            "r1pipe/__init__.py": "",
            "r1pipe/a.py": "import r1pipe.b",
            "r1pipe/b.py": "import r1pipe.a",
        },
    )
    assert layers.main(["--root", str(broken)]) == 1
    assert capsys.readouterr().out.rstrip().endswith("FAILED: R2")
