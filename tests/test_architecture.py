"""The package's shape (issue #13): three layers with imports in one direction and no cycles, the
torch-free half really free of torch, names that are data in one place, and a new family costing
one folder plus one registry entry."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sgbench import catalog
from sgbench.families import FAMILIES, get

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sgbench"
CORE = {"__init__", "catalog", "config", "runtime", "dni", "unlock", "nets", "tasks", "fidelity", "data", "corpus",
        "fast", "loop", "schemas", "optim"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path) -> set[str]:
    """sgbench modules `name` imports anywhere in its file (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sgbench")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.startswith("sgbench"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}  # `from . import x` imports module x
    known = modules()
    return {m for m in found if m in known and m != name}


def layer(name: str) -> int:
    """0 core (torch only) < 1 analysis (torch-free) < 2 families < 3 claims/report < 4 command line."""
    parts = name.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in CORE):
        return 0
    return {"analysis": 1, "families": 2, "claims": 3, "cli": 4, "__main__": 4}[parts[1]]


GRAPH = {name: imports_of(name, path) for name, path in modules().items()}


def test_imports_go_down_the_layers_only():
    upward = [(a, b) for a, targets in GRAPH.items() for b in targets if layer(b) > layer(a)]
    assert not upward, upward


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in GRAPH[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in GRAPH:
        if node not in state:
            visit(node, [node])


def test_analysis_and_report_never_import_a_runner():
    runners = {m for m in GRAPH if m.endswith(".run")}
    for name, targets in GRAPH.items():
        if layer(name) in (1, 3) or name.endswith((".tables", ".figures", ".config")):
            assert not targets & runners, (name, targets & runners)


TORCH_FREE = ["sgbench", "sgbench.cli", "sgbench.catalog", "sgbench.config", "sgbench.runtime", "sgbench.families",
              "sgbench.families.grid", "sgbench.claims.render", "sgbench.claims.rules",
              *(f"sgbench.families.{f.name}{part}" for f in FAMILIES for part in ("", ".config", ".tables", ".figures"))]
BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
"""


def run_without_torch(code: str, tmp_path: Path, *args: str):
    script = tmp_path / "no_torch.py"
    script.write_text(BLOCK_TORCH + code)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=dict(os.environ, MPLBACKEND="Agg"))


def test_torch_free_modules_import_without_torch(tmp_path):
    out = run_without_torch(f"import importlib\nfor m in {TORCH_FREE!r}:\n    importlib.import_module(m)\n"
                            "from sgbench.families.grid import expand\nimport yaml\n"
                            f"expand(yaml.safe_load(open({str(ROOT / 'workflows/config/tiers/quick.yaml')!r})), 'quick')\n"
                            "print('ok')", tmp_path)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_help_aggregate_figures_and_report_run_without_torch(tmp_path):
    code = """
from sgbench.cli import main
from sgbench.families import FAMILIES
assert main(["--version"]) == 0 if False else True
for f in FAMILIES:
    assert main(["aggregate", f.name, "--tier", "smoke", "--out", "tables"]) == 0
    assert main(["figures", f.name, "--tier", "smoke", "--tables", "tables", "--out", "figures"]) == 0
assert main(["report", "--tier", "smoke", "--tables", "tables", "--figures", "figures", "--out", "REPORT.md"]) == 0
print("ok")
"""
    out = run_without_torch(code, tmp_path)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
    assert "not run at this tier" in (tmp_path / "REPORT.md").read_text()
    helped = run_without_torch("import sys\nfrom sgbench.cli import main\nsys.argv = ['sgbench', 'train-ff', '--help']\n"
                               "main()", tmp_path)
    assert helped.returncode == 0 and "--method" in helped.stdout, helped.stderr[-2000:]


def test_the_workflow_parses_without_torch(tmp_path):
    code = f"""
import sys
from snakemake.cli import main
sys.argv = ["snakemake", "-n", "-s", {str(ROOT / 'Snakefile')!r}, "--directory", {str(tmp_path)!r},
            "--config", "tier=quick"]
main()
"""
    out = run_without_torch(code, tmp_path)
    assert out.returncode == 0 and "train_feedforward" in out.stdout, (out.stdout + out.stderr)[-3000:]


# ---------------------------------------------------------------- names as data

def schema_enum(schema: dict, *path: str) -> set:
    node = schema
    for key in path:
        node = node[key]
    return set(node["enum"])


def method_family(family) -> str:
    """The catalog family whose methods a registry family runs (diagnostics runs feed-forward methods)."""
    return family.schema.removesuffix("_metrics").replace("ff", "feedforward")


def test_tier_schema_enums_come_from_the_catalog():
    tier = yaml.safe_load((ROOT / "workflows/schemas/tier.schema.yaml").read_text())["properties"]
    for family in FAMILIES:
        grid = tier[family.name]["items"]["properties"]
        methods = schema_enum(grid, "method", "items")
        if family.name == "diagnostics":  # the methods whose DNIs can move, warm up, be probed, and backprop
            assert methods == set(catalog.PLACEABLE_METHODS) | {"backprop"}, family.name
        else:
            assert methods == set(catalog.methods(method_family(family))), family.name
        assert family.budget in grid and family.budget in tier[family.name]["items"]["required"], family.name
        assert schema_enum(grid, "precision", "items") == set(catalog.PRECISIONS), family.name
    assert schema_enum(tier["feedforward"]["items"]["properties"], "dataset", "items") == set(catalog.DATASETS)
    assert schema_enum(tier["feedforward"]["items"]["properties"], "arch", "items") == set(catalog.ARCHS)
    assert schema_enum(tier["rnn"]["items"]["properties"], "task", "items") <= set(catalog.TASKS)
    assert set(tier) - {"description", "gpus_per_run", "lr_selection"} == {f.name for f in FAMILIES}


def test_metrics_schemas_and_configs_agree_with_the_catalog():
    """Every metrics schema's method enum is its family's catalog rows, so a new method's run is not
    refused by validation after it has trained (ff_metrics included)."""
    for family in FAMILIES:
        schema = json.loads((PACKAGE / "schemas" / f"{family.schema}.schema.json").read_text())
        assert set(schema["properties"]["tier"]["enum"]) == set(catalog.TIERS), family.schema
        assert set(schema["properties"]["config"]["properties"]["precision"]["enum"]) == set(catalog.PRECISIONS)
        method = schema["properties"]["config"]["properties"]["method"]
        assert set(method["enum"]) == set(catalog.methods(method_family(family))), family.schema
        if family.schema == "ff_metrics":  # complete unlock's extra fields are required of these methods
            unlock = [rule["if"]["properties"]["config"]["properties"]["method"]["enum"] for rule in schema["allOf"]
                      if "method" in rule["if"]["properties"].get("config", {}).get("properties", {})]
            assert [set(u) for u in unlock] == [set(catalog.UNLOCK_METHODS)]
        config = family.config_class()
        assert set(config.CHOICES["tier"]) == set(catalog.TIERS)
        assert tuple(config.CHOICES["method"]) == catalog.methods(method_family(family)), family.name


def test_the_slurm_profile_gives_every_family_its_declared_resources():
    """workflows/profiles/slurm lists train_<family> for every family with its declaration's memory,
    time and threads (a timing family's threads come from its tier), and no rule that does not exist."""
    profile = yaml.safe_load((ROOT / "workflows/profiles/slurm/config.yaml").read_text())
    rules = {f"train_{f.name}" for f in FAMILIES} | {"prepare_data"}
    assert set(profile["set-resources"]) <= rules and set(profile["set-threads"]) <= rules
    for f in FAMILIES:
        rule = f"train_{f.name}"
        assert {k: profile["set-resources"][rule][k] for k in ("mem_mb", "runtime")} == \
            {k: f.cluster[k] for k in ("mem_mb", "runtime")}, rule
        assert profile["set-threads"].get(rule) == (None if f.timing else f.cluster["threads"]), rule


def test_unknown_names_are_errors_not_fallbacks():
    with pytest.raises(ValueError, match="unknown experiment family 'rnnn'"):
        get("rnnn")
    with pytest.raises(ValueError, match="unknown parallel method 'sgd'"):
        catalog.method("parallel", "sgd")
    from sgbench.families.parallel.model import predicted_step_s
    with pytest.raises(ValueError, match="unknown parallel method"):
        predicted_step_s("gpipe2", {32: [1.0, 1.0]}, [0.1, 0.1], [1, 1], 32, 0.0)


def dispatches():
    """(what, call, message): every place that chooses code by a method, SG rule, protocol, arch, placement
    or family, fed a value it does not know. Each must raise a ValueError that lists the valid values."""
    import types

    from sgbench import nets, unlock
    from sgbench.families import grid
    from sgbench.families.parallel import config as pconfig
    rnn = types.SimpleNamespace(method="rtrl", hidden_size=4, forget_bias=0.0)
    toy_row = types.SimpleNamespace(name="toy", family="rnn", sg_rule="rtrl")
    return [
        ("catalog method", lambda: catalog.method("feedforward", "sgd"), "choose one of backprop, dni, cdni"),
        ("catalog row's SG rule", lambda: catalog.Method("toy", "feedforward", uses_sg=True, sg_rule="rtrl"),
         "one of bootstrap, bp_lambda"),
        ("catalog arch", lambda: catalog.paper_sg_hidden_layers("mlp", "dni"), "choose one of fcn, cnn"),
        ("feed-forward net method", lambda: nets.FeedForwardNet("fcn", 2, "sgd", (1, 4, 4)), "choose one of backprop"),
        ("feed-forward net arch", lambda: nets.FeedForwardNet("mlp", 2, "dni", (1, 4, 4)), "choose one of fcn, cnn"),
        ("DNI placement", lambda: nets.placed_boundaries(3, "top"), "choose one of every, every_second, middle"),
        ("feed-forward SG rule", lambda: nets.feedforward_rule(catalog.method("rnn", "dni_bpl")),
         "learn with: bootstrap"),
        ("recurrent SG rule", lambda: nets.sequence_rule(toy_row, None), "choose one of bootstrap, bp_lambda"),
        ("sequence net method", lambda: nets.SequenceNet(2, 2, rnn), "choose one of bptt, dni, dni_aux, dni_bpl"),
        ("input model arch", lambda: unlock.make_input_model("mlp", (1, 4, 4), (4,), unlock.InputSpec(), 0),
         "choose one of fcn, cnn"),
        ("parallel protocol", lambda: pconfig.Protocol("ring", "backprop"),
         "choose one of locked, pipelined, data_parallel, decoupled"),
        ("pipeline schedule", lambda: pconfig.Protocol("pipelined", "backprop", schedule="zb"), "gpipe, 1f1b"),
        ("data-parallel batch", lambda: pconfig.Protocol("data_parallel", "backprop", batch="half"), "split, keep"),
        ("family", lambda: get("toy"), "choose one of feedforward, rnn, charlm, diagnostics, parallel"),
        ("tier's family", lambda: grid.expand({"toy": []}, "smoke"), "valid: feedforward, rnn, charlm"),
    ]


@pytest.mark.parametrize("what", [d[0] for d in dispatches()])
def test_every_dispatch_refuses_an_unknown_value_naming_the_valid_ones(what):
    call, message = next((c, m) for w, c, m in dispatches() if w == what)
    with pytest.raises(ValueError, match=message):
        call()


def test_the_parallel_protocol_dispatches_refuse_a_protocol_they_do_not_know(monkeypatch):
    """A protocol that got past the Protocol row's check (set behind its back) reaches no other protocol's
    code: the protocol classes (workers, steps, batches, evaluation), the profile sizes and the analytic
    model each refuse it."""
    from sgbench.families.parallel import config as pconfig
    from sgbench.families.parallel import profile, protocols
    from sgbench.families.parallel.model import predicted_step_s
    smuggled = pconfig.Protocol("locked", "backprop")
    object.__setattr__(smuggled, "protocol", "ring")
    monkeypatch.setitem(pconfig.METHODS, "backprop", smuggled)
    cfg = pconfig.ParallelConfig(method="backprop")
    for call in (lambda: protocols.protocol_of(cfg), lambda: profile.profile_batches(cfg, 1000),
                 lambda: predicted_step_s("backprop", {32: [1.0, 1.0]}, [0.1, 0.1], [1, 1], 32, 0.0)):
        with pytest.raises(ValueError, match="unknown parallel protocol 'ring'; choose one of locked, pipelined"):
            call()


# ---------------------------------------------------------------- a new family is one folder

TOY_DECLARATION = '''
from .. import Family

FAMILY = Family(name="toy", order=99, summary="a toy", command="train-toy", config="config:ToyConfig",
                runner="run:train", run_name="config:run_name", schema="ff_metrics", budget="steps",
                budget_unit="steps", outputs={"runs": "toy_runs.csv", "md": "toy.md"}, figures=(),
                report_tables=(("md", "toy table"),), needs_data=False,
                cluster={"mem_mb": 1000, "runtime": 5, "threads": 1})
'''
TOY_CONFIG = '''
from dataclasses import dataclass
from sgbench.config import RunConfig


@dataclass
class ToyConfig(RunConfig):
    method: str = "a"
    seed: int = 0
    steps: int = 3
    tier: str = "custom"
    CHOICES = {"method": ("a", "b")}

    def resolved(self):
        self.check([(self.steps >= 1, "steps must be >= 1")])
        return self


def run_name(p):
    return f"toy-{p['method']}-seed{p['seed']}"
'''
TOY_TABLES = '''
from pathlib import Path
import pandas as pd
from sgbench.analysis.tables import write_csv, write_text


def aggregate(paths, tier, out_dir):
    runs = pd.DataFrame({"method": ["a", "b"], "seed": [0, 0], "steps": [5, 5], "value": [1.0, 2.0],
                         "device": "cpu", "hardware": "a CPU", "threads": 1, "git_commit": "abc"})
    write_csv(Path(out_dir) / "toy_runs.csv", runs)
    write_text(Path(out_dir) / "toy.md", "# toy\\n")
    return runs


def report_section(tier, tables):
    return ["## Toy family\\n", f"tier {tier}: " + (Path(tables) / "toy.md").read_text()]
'''


def test_a_toy_family_plugs_in_with_its_folder_only(tmp_path, monkeypatch):
    """A new family is one folder: its `__init__` declaration, config.py, tables.py (+ run.py and
    figures.py for a real one). The registry finds it where it finds the others (the folder sits on the
    families package's path), and the command line, grid expansion, aggregation and the report's family
    section then just work, with no other file edited."""
    import sgbench.families as registry
    from sgbench import cli
    from sgbench.claims import render
    from sgbench.families import grid
    folder = tmp_path / "toy"
    folder.mkdir()
    for name, text in (("__init__", TOY_DECLARATION), ("config", TOY_CONFIG), ("tables", TOY_TABLES)):
        (folder / f"{name}.py").write_text(text)
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "sgbench.families.toy", raising=False)
    found = registry.discover()
    assert [f.name for f in found] == [*registry.names(), "toy"]
    monkeypatch.setattr(registry, "FAMILIES", found)
    monkeypatch.setattr(render, "FAMILIES", found)  # the report imported the registry's tuple by name
    runs = grid.expand_family("toy", [{"method": ["a", "b"], "seed": [0, 1], "steps": 5}], "smoke")
    assert sorted(runs) == ["toy-a-seed0", "toy-a-seed1", "toy-b-seed0", "toy-b-seed1"]
    with pytest.raises(ValueError, match="unknown method 'c'"):
        grid.expand_family("toy", [{"method": ["c"], "seed": [0], "steps": 5}], "smoke")
    registry.aggregate("toy", [], "smoke", tmp_path / "tables")
    text = render.render("smoke", render.load_runs(tmp_path / "tables"), tmp_path / "tables", tmp_path / "figs",
                         tmp_path / "REPORT.md")
    assert "## Toy family" in text and "| toy | 2 |" in text and "[toy table](tables/toy.md)" in text
    with pytest.raises(SystemExit) as helped:
        cli.main(["train-toy", "--help"])
    assert helped.value.code == 0


def test_a_family_folder_without_a_declaration_is_refused(tmp_path, monkeypatch):
    import sgbench.families as registry
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "__init__.py").write_text("")
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "sgbench.families.stray", raising=False)
    with pytest.raises(ValueError, match="declares FAMILY = Family"):
        registry.discover()


# ---------------------------------------------------------------- a new method is one row

TOY_ROW = ('    Method("toy_cdni", "feedforward", uses_sg=True, sg_rule="bootstrap", conditioned=True, placeable=True,\n'
           '           stackable=True, table1=True, label="toy cDNI"),\n')
TOY_METHOD_RUN = """
import json, sys
from pathlib import Path
from sgbench.cli import main
root, out = sys.argv[1], Path(sys.argv[2])
tiny = ["--dataset", "mnist", "--layers", "2", "--iterations", "20", "--batch-size", "32", "--eval-every", "10",
        "--sg-hidden-dim", "16", "--data-root", root, "--device", "cpu", "--tier", "smoke", "--quiet"]
for method in ("backprop", "toy_cdni"):
    assert main(["train-ff", "--method", method, *tiny, "--out", str(out / "runs" / method)]) == 0
assert main(["train-ff", "--method", "toy_cdni", "--seeds", "1,2", *tiny, "--out", str(out / "runs" / "s{seed}")]) == 0
paths = [str(p) for p in sorted((out / "runs").glob("*/metrics.json"))]
assert main(["aggregate", "feedforward", *paths, "--tier", "smoke", "--out", str(out / "tables")]) == 0
assert main(["figures", "feedforward", "--tier", "smoke", "--tables", str(out / "tables"), "--out", str(out / "figs")]) == 0
assert main(["report", "--tier", "smoke", "--tables", str(out / "tables"), "--figures", str(out / "figs"),
             "--out", str(out / "REPORT.md")]) == 0
print("ok")
"""


def test_a_toy_method_is_one_catalog_row(data_root, tmp_path):
    """A new SG feed-forward method (here: cDNI under another name) is its catalog row, plus its name in
    the metrics schema's enum (which test_metrics_schemas_and_configs_agree_with_the_catalog holds to the
    catalog): in a copy of the package with just those two edits it trains (one seed and stacked seeds),
    is validated, and appears in Table 1, its CSV and the figure's data, with no other file touched."""
    import shutil
    copy = tmp_path / "src" / "sgbench"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    catalog_py = copy / "catalog.py"
    anchor = '    Method("no_bprop", "feedforward"'
    catalog_py.write_text(catalog_py.read_text().replace(anchor, TOY_ROW + anchor, 1))
    schema = copy / "schemas" / "ff_metrics.schema.json"
    schema.write_text(schema.read_text().replace('"enum": ["backprop", "dni", "cdni", "no_bprop", "unlock", "cunlock"]',
                                                 '"enum": ["backprop", "dni", "cdni", "toy_cdni", "no_bprop", "unlock", '
                                                 '"cunlock"]', 1))
    script = tmp_path / "toy_method.py"
    script.write_text(TOY_METHOD_RUN)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "src"), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(script), str(data_root), str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=600, env=env, cwd=tmp_path)
    assert out.returncode == 0 and "ok" in out.stdout, (out.stdout + out.stderr)[-3000:]
    metrics = json.loads((tmp_path / "out" / "runs" / "toy_cdni" / "metrics.json").read_text())
    assert metrics["config"]["method"] == "toy_cdni" and metrics["model"]["dni_boundaries"] == 2
    assert metrics["config"]["sg_hidden_layers"] == 0  # the paper's linear SG of a conditioned FCN method
    table1 = (tmp_path / "out" / "tables" / "feedforward.md").read_text()
    assert "toy_cdni" in table1.splitlines()[[i for i, line in enumerate(table1.splitlines()) if "backprop" in line][0]]
    curves = (tmp_path / "out" / "tables" / "feedforward_curves.csv").read_text()
    assert "toy_cdni" in curves and (tmp_path / "out" / "figs" / "ff_test_error.png").stat().st_size > 0
    # the claims that cover its kind (an SG method of Table 1: F1, F2) take it from its row, no claims edit
    report = (tmp_path / "out" / "REPORT.md").read_text()
    claims = [line for line in report.splitlines() if "toy_cdni" in line]
    assert any("F1" in line or "F2" in line for line in claims), report[-3000:]
