"""The README's results table comes from reports/, and the tree shows the design: stages are stages, lib has no cycles."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from stages.tools.report import END_MARKER, START_MARKER, replace_between_markers, results_table
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"


def test_the_readmes_results_table_is_what_the_committed_reports_say():
    text = README.read_text()
    expected = replace_between_markers(text, results_table(REPO_ROOT / "reports"))
    assert text == expected, "README.md's results table is stale: run `python -m stages.tools.report --write README.md`"


def test_the_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 300


def test_a_changed_report_changes_the_table_and_a_missing_one_is_named(tmp_path):
    metrics = json.loads((REPO_ROOT / "reports/metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps({**metrics, "test_accuracy": 0.5}))
    table = results_table(tmp_path)
    assert "top-1 0.500" in table
    assert "Not measured yet: devset.json" in table and "benchmark.json" in table
    with pytest.raises(ValueError, match="no <!-- results:start -->"):
        replace_between_markers("no markers here", table)
    assert replace_between_markers(f"a\n{START_MARKER}\nold\n{END_MARKER}\nb", "new") == \
        f"a\n{START_MARKER}\nnew\n{END_MARKER}\nb"


def test_every_module_directly_under_stages_is_a_dvc_stage_of_the_same_name():
    stages = set(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"])
    modules = {path.stem for path in (REPO_ROOT / "stages").glob("*.py") if path.stem != "__init__"}
    assert modules == stages
    for name, stage in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"].items():
        assert stage["cmd"] == f"python -m stages.{name}"


def lib_imports(path: Path) -> set[str]:
    """The stages.lib modules a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages.lib."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[2] for alias in node.names if alias.name.startswith("stages.lib.")}
    return found - {path.stem}


def test_no_two_library_modules_import_each_other():
    graph = {path.stem: lib_imports(path) for path in (REPO_ROOT / "stages/lib").glob("*.py")}
    pairs = {tuple(sorted((a, b))) for a, imported in graph.items() for b in imported if a in graph.get(b, set())}
    assert not pairs, f"modules that import each other: {sorted(pairs)}"


def test_the_seed_figures_give_each_figure_its_mean_and_range_and_a_row_saying_so(tmp_path):
    from stages.tools.seeds import summarise_seeds
    per_seed = {42: {"stream_sign_error_rate": 0.0, "fast_stream_sign_error_rate": 0.2, "test_accuracy": 0.9},
                1: {"stream_sign_error_rate": 0.1, "fast_stream_sign_error_rate": None, "test_accuracy": 1.0},
                2: {"stream_sign_error_rate": 0.05, "fast_stream_sign_error_rate": 0.4, "test_accuracy": 0.95}}
    summary = summarise_seeds(per_seed)
    assert summary["stream_sign_error_rate"] == {"values": {42: 0.0, 1: 0.1, 2: 0.05}, "mean": 0.05, "min": 0.0,
                                                 "max": 0.1}
    assert summary["fast_stream_sign_error_rate"]["mean"] == pytest.approx(0.3)      # the seed without it left out
    assert summary["stream_false_signs_per_minute"]["mean"] is None
    metrics = json.loads((REPO_ROOT / "reports/metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "seeds.json").write_text(json.dumps({"seeds": [42, 1, 2], "machine": "a CPU", "figures": summary}))
    row = next(line for line in results_table(tmp_path).splitlines() if "head seeds" in line)
    assert "sign error rate 0.050 (0.000-0.100)" in row and "without pauses 0.300 (0.200-0.400)" in row
    assert "false signs/min –" in row and "a CPU" in row

