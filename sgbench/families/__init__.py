"""The experiment families, found by folder: each folder under sgbench/families/ is one family.

A family is a plugin: its folder holds its run config (config.py), its runner (run.py), its tables
(tables.py), its figures (figures.py), and in its `__init__.py` one `Family(...)` declaration named
FAMILY that says where each piece is and what the family writes. This registry imports every folder's
`__init__` (which imports nothing but this module and torch-free config modules) and lists them in
their `order`; the command line, the workflow, the SLURM profile's test and the report iterate it.
Nothing here imports a runner (or torch): `Family.train()` imports it when a run starts. An unknown
family name is an error (`get`), never a fallback to another family's code.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Family:
    """One family's declaration. A piece is "module:attribute", the module relative to the family's
    folder ("config:FFConfig") or absolute ("sgbench.families.feedforward.config:FFConfig")."""
    name: str                     # its folder's name
    order: int                    # where it comes in the command line, the workflow and the report
    summary: str                  # one line, for --help and the report
    command: str                  # `sgbench <command>` trains one run of it (families may share one)
    config: str                   # its run-config dataclass (torch-free module)
    runner: str                   # function(config, out_dir) -> metrics: imported when a run starts
    # Under torchrun (one process per worker): function(config, out_dir, launch, claim), run on every rank;
    # "" : the family's runs are one process each and refuse a launcher.
    launched: str = ""
    run_name: str                 # function(grid point) -> run folder name (torch-free)
    schema: str                   # sgbench/schemas/<schema>.schema.json checks its metrics.json
    budget: str                   # the config field that sets its budget (a tier grid's one scalar key)
    budget_unit: str              # how tables name that budget's unit
    outputs: dict[str, str]       # what `sgbench aggregate <name>` writes: key -> file name
    figures: tuple[str, ...]      # what `sgbench figures <name>` draws: NAME.png and NAME.pdf each
    report_tables: tuple[tuple[str, str], ...] = ()  # (outputs key, title) that REPORT.md links
    needs_data: bool = True       # its runs read an image data set (the pipeline prepares it first)
    timing: bool = False          # its runs are timings: each takes the whole machine
    non_result: frozenset[str] = field(default_factory=frozenset)  # config fields that set no number
    chosen_lr: bool = False       # its runs take the tier's chosen learning rate (lr_selection: chosen)
    # The SLURM profile's train_<name> rule (workflows/profiles/slurm; a test checks they agree):
    # mem_mb, runtime (minutes) and, unless a timing family (its threads are K workers x threads), threads.
    cluster: dict[str, int] = field(default_factory=dict)
    command_help: str = ""        # `sgbench --help`'s line for its command ("": the summary)
    help: str = ""                # `sgbench <command> --help`'s description ("": the summary)
    module: str = ""              # its package; "" : sgbench.families.<name>

    def __post_init__(self):
        if not self.module:
            object.__setattr__(self, "module", f"{__name__}.{self.name}")

    def _load(self, spec: str):
        """A piece of the family, imported now."""
        module, _, attr = spec.partition(":")
        absolute = module.startswith("sgbench.")
        return getattr(importlib.import_module(module if absolute else f"{self.module}.{module}"), attr)

    def config_class(self):
        return self._load(self.config)

    def train(self, config, out_dir):
        """Run one training run of this family (imports the runner, and torch, now)."""
        return self._load(self.runner)(config, out_dir)

    def train_launched(self, config, out_dir, launch, claim):
        """This process's part of a run that torchrun launched (`launch`: runtime.Launch). Rank 0 enters
        `claim()` (the folder's lock; it yields the finished run found there, or None) and tells the
        others whether to train."""
        if not self.launched:
            raise ValueError(f"`sgbench {self.command}` trains in one process and does not run under torchrun "
                             f"(RANK / WORLD_SIZE are set); run it without a launcher, or use one of: "
                             + ", ".join(f"sgbench {f.command}" for f in FAMILIES if f.launched))
        return self._load(self.launched)(config, out_dir, launch, claim)

    def name_run(self, point: dict) -> str:
        return self._load(self.run_name)(point)

    def tables(self):
        """Its tables module: collect(...), aggregate(paths, tier, out_dir), its Markdown helpers."""
        return importlib.import_module(f"{self.module}.tables")

    def plots(self):
        """Its figures module: draw(tier, tables, out_dir) (imports matplotlib)."""
        return importlib.import_module(f"{self.module}.figures")

    def figure_inputs(self, tables, out_dir, *keys: str) -> tuple[dict, dict]:
        """What a figures module's draw starts from: ({outputs key: the table `aggregate` wrote}, for each
        of `keys`) and ({figure name: its path stem in out_dir}, for each of its figures)."""
        from ..analysis.tables import read_table
        read = {key: read_table(Path(tables) / self.outputs[key]) for key in keys}
        return read, {name: Path(out_dir) / name for name in self.figures}


def discover(package: str = __name__, path=None) -> tuple[Family, ...]:
    """Every folder of `package` that declares a FAMILY, in their order. A folder without one, or two
    folders claiming one name, is an error naming the folder."""
    found = []
    for info in pkgutil.iter_modules(path if path is not None else __path__):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if not isinstance(family, Family) or family.name != info.name:
            raise ValueError(f"{module.__file__}: a family folder declares FAMILY = Family(name={info.name!r}, ...)")
        found.append(family)
    return tuple(sorted(found, key=lambda f: (f.order, f.name)))


FAMILIES: tuple[Family, ...] = discover()


def names() -> tuple[str, ...]:
    return tuple(f.name for f in FAMILIES)


def get(name: str) -> Family:
    """The family called `name`; an unknown name is an error that lists the known ones."""
    for f in FAMILIES:
        if f.name == name:
            return f
    raise ValueError(f"unknown experiment family {name!r}; choose one of {', '.join(names())}")


def commands() -> dict[str, Family]:
    """`sgbench <command>` -> the family whose runs it trains (the first in order that names it)."""
    out: dict[str, Family] = {}
    for f in FAMILIES:
        out.setdefault(f.command, f)
    return out


def aggregate(name: str, paths, tier: str, out_dir):
    """`sgbench aggregate`: a family's metrics.json files -> its tables in out_dir; returns the runs table."""
    return get(name).tables().aggregate(paths, tier, out_dir)


def draw(name: str, tier: str, tables, out_dir):
    """`sgbench figures`: a family's figures from the tables `aggregate` wrote; returns the PNG paths."""
    return get(name).plots().draw(tier, tables, out_dir)
