"""`sgbench` command line. Every config field is a flag; `--config FILE` (YAML/JSON) sets many at once.

Precedence: dataclass defaults < config file < flags given on the command line. The training
subcommands, `aggregate` and `figures` come from the family registry (sgbench/families). Parsing
the command line imports no torch: a runner (and torch) is imported when a run starts.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import errno
import json
import logging
import sys
import typing
from pathlib import Path

from . import __version__, runtime
from .catalog import DATASETS
from .config import field_help
from .families import FAMILIES, commands, get
from .runtime import MetricsError, RunError


def config_flags(config_cls) -> list[tuple[str, str, str, str, str]]:
    """(field, flag, default, choices, explanation) for each config field: the one source of what
    `--help` says and of the flag tables in docs/flags.md (write_flag_docs), so they cannot disagree."""
    defaults, explain = config_cls(), field_help(config_cls)
    rows = []
    for f in dataclasses.fields(config_cls):
        default = getattr(defaults, f.name)
        default = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        choices = ", ".join(config_cls.CHOICES.get(f.name, ()))
        rows.append((f.name, "--" + f.name.replace("_", "-"), default, choices, explain.get(f.name, "")))
    return rows


def add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """One flag per config field, explained by the field's comment in its config class. Values stay
    text here: the config class checks and converts them the same way for flags, config files and
    tier settings (sgbench.config.coerce), naming the key when one is wrong."""
    hints = typing.get_type_hints(config_cls)
    for name, flag, default, choices, explanation in config_flags(config_cls):
        text = f"one of {choices}; default: {default}" if choices else f"default: {default}"
        text = (f"{explanation} ({text})" if explanation else text).replace("%", "%%")  # argparse formats with %
        if hints[name] is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=text)
    parser.add_argument("--config", type=Path, help="YAML or JSON file of config keys (flags override it)")
    parser.add_argument("--force", action="store_true",
                        help="train even if --out already holds this run's finished metrics.json (else it is skipped)")


FLAG_DOCS = Path(__file__).resolve().parents[1] / "docs" / "flags.md"


def flag_docs() -> str:
    """docs/flags.md: every training command's config flags with their defaults, from config_flags."""
    parts = ["# Every flag of the training commands and its default", "",
             "[Back to the README](../README.md) · [Single runs](runs.md)", "",
             "Generated from the config classes, which `sgbench <command> --help` reads too; do not edit by hand. "
             "After changing a config field: `python -c \"from sgbench.cli import write_flag_docs; write_flag_docs()\"` "
             "(tests/test_cli.py fails while this file is stale). Every command also takes `--out` (the run folder), "
             "`--config FILE`, `--force` and `--quiet`."]
    for command, family in commands().items():
        parts += ["", f"## sgbench {command}", "", "| flag | default | what it sets |", "| --- | --- | --- |"]
        for _, flag, default, choices, explanation in config_flags(family.config_class()):
            what = f"{explanation} (one of {choices})" if choices else explanation
            parts.append(f"| `{flag}` | `{default}` | {what.replace('|', chr(92) + '|')} |")
    return "\n".join(parts) + "\n"


def write_flag_docs(path: Path = FLAG_DOCS) -> None:
    runtime.atomic_write_bytes(path, flag_docs().encode())


def read_config_file(path: Path) -> dict:
    """A mapping of config keys from YAML or JSON; a file that does not parse is one error naming the
    file and the line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"--config {path}: cannot read it ({e.strerror})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark else ""
            raise ValueError(f"--config {path}: not valid YAML{line} ({getattr(e, 'problem', None) or e}); "
                             "fix the file") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path}: not valid JSON at line {e.lineno} ({e.msg}); fix the file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def build_config(config_cls, args: argparse.Namespace):
    values = read_config_file(args.config) if args.config else {}
    names = {f.name for f in dataclasses.fields(config_cls)}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return config_cls.from_dict(values)


def check_out_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the run (metrics.json goes inside it)")


def train(family, args) -> None:
    """Check everything a run needs before any data is read, wait for any other process training
    in the same folder, skip a run already finished there (unless --force), then train."""
    check_out_folder(args.out)
    config = build_config(family.config_class(), args).resolved()
    runtime.resolve_device(config.device)
    note = lambda text: print(f"sgbench: {text}", file=sys.stderr)  # noqa: E731

    @contextlib.contextmanager
    def claim():
        """Hold the run folder; yield the finished run it holds (then it is skipped), else None."""
        with runtime.run_lock(args.out, note):
            fix = "choose another --out, or add --force to replace it"
            done = None if args.force else runtime.finished_run(args.out, config, family, fix)
            if done is not None:
                note(f"{args.out / 'metrics.json'} already holds this run (status {done['status']}); "
                     "skipped (add --force to train it again)")
            yield done

    launch = runtime.launch_env()
    if launch is not None:  # torchrun started this process as one worker: only rank 0 enters claim()
        family.train_launched(config, args.out, launch, claim)
        return
    with claim() as done:
        if done is None:
            family.train(config, args.out)


def os_error_text(e: OSError) -> str:
    """One line for a failed file operation: which file, why, and the fix."""
    fix = {errno.ENOSPC: "free some space, then rerun the same command (it resumes)",
           errno.EDQUOT: "free some space, then rerun the same command (it resumes)",
           errno.EACCES: "choose a folder you can write (--out)",
           errno.EPERM: "choose a folder you can write (--out)",
           errno.EROFS: "choose a folder on a writable file system (--out)"}.get(e.errno, "check the path")
    return f"cannot write or read {e.filename or 'a file'}: {e.strerror or e}; {fix}"


def prepare_data(args) -> None:
    from .data import load_dataset, resolve_data_root  # torch: only for this command
    data = load_dataset(args.dataset, resolve_data_root(args.data_root), download=args.download)
    found = {"requested": args.dataset, "variant": data.name, "source": data.source,
             "n_train": len(data.train_y), "n_test": len(data.test_y), "input_shape": list(data.input_shape)}
    print(json.dumps(found))
    if args.out:
        runtime.atomic_write_json(args.out, found)


def check_tables(tier: str, tables: Path) -> None:
    """`report` reads the runs tables `aggregate` wrote. A folder without any is a mistake (its report
    would call every claim untested), and --tier must be the tier the tables' runs belong to (else
    the report would label one tier's numbers as another's). Tables of no runs name no tier."""
    names = [f.outputs["runs"] for f in FAMILIES]
    if not tables.is_dir():
        raise ValueError(f"--tables {tables}: no such folder; give the folder `sgbench aggregate --out` wrote")
    found = [tables / n for n in names if (tables / n).is_file()]
    if not found:
        raise ValueError(f"--tables {tables}: holds none of the runs tables ({', '.join(names)}); run "
                         "`sgbench aggregate` into it first, or give the folder it wrote")
    tiers = set()
    for path in found:
        with open(path, newline="") as f:
            tiers |= {row["tier"] for row in csv.DictReader(f) if row.get("tier")}
    if tiers and tiers != {tier}:
        raise ValueError(f"--tier {tier}: the tables in {tables} hold runs of tier {', '.join(sorted(tiers))}; "
                         f"use --tier {' or '.join(sorted(tiers))}, or give that tier's tables")


def add_train_commands(sub) -> None:
    for command, family in commands().items():
        p = sub.add_parser(command, help=family.command_help or family.summary,
                           description=family.help or family.summary)
        p.add_argument("--out", type=Path, required=True, help="run folder: metrics.json (and a checkpoint while running)")
        add_config_flags(p, family.config_class())
        p.add_argument("--quiet", action="store_true", help="log warnings only")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sgbench", description="Synthetic-gradient (DNI) replication benchmark")
    parser.add_argument("--version", action="version", version=f"sgbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_commands(sub)

    prep = sub.add_parser("prepare-data", help="check a data set is readable (decode + cache CIFAR JPEGs once)")
    prep.add_argument("--dataset", required=True, choices=DATASETS)
    prep.add_argument("--data-root", default=None, help="else $SGBENCH_DATA, else ./data")
    prep.add_argument("--download", action="store_true", help="let torchvision download it if missing")
    prep.add_argument("--out", type=Path, help="write what was found (variant, source, sizes) as JSON here")

    agg = sub.add_parser("aggregate", help="a family's metrics.json files -> tidy tables (Markdown + CSV)",
                         description="Writes into --out: " + "; ".join(
                             f"{f.name}: {', '.join(f.outputs.values())}" for f in FAMILIES)
                         + ". No files: the tables say the family was not run at this tier.")
    agg.add_argument("family", choices=[f.name for f in FAMILIES])
    agg.add_argument("metrics", nargs="*", type=Path, help="metrics.json files, all of --tier")
    agg.add_argument("--tier", required=True, help="the tier every file must belong to")
    agg.add_argument("--out", type=Path, required=True, help="folder for the tables")

    figs = sub.add_parser("figures", help="a family's figures (PNG + PDF) from the tables `aggregate` wrote",
                          description="Writes into --out: " + "; ".join(
                              f"{f.name}: {', '.join(f.figures)}" for f in FAMILIES) + ".")
    figs.add_argument("family", choices=[f.name for f in FAMILIES])
    figs.add_argument("--tier", required=True)
    figs.add_argument("--tables", type=Path, required=True, help="the folder `aggregate` wrote")
    figs.add_argument("--out", type=Path, required=True, help="folder for the figures")

    sel = sub.add_parser("select-lr", help="short-budget tuning: pick a tier's learning rate(s) on validation error",
                         description="Trains each method of the tier file's lr_selection block (`methods:`; else "
                         "backprop alone) at each learning rate of its grid at the tier's budget (finished runs are "
                         "reused), picks each method's lowest mean validation error (or backprop's for all), writes "
                         "the runs and the choice into --out/<tier>/ and sets `lr_selection: chosen:` in the tier "
                         "file. Every feed-forward and diagnostics run of the tier then uses it (docs/statistics.md). "
                         "The committed selections are reused, not rerun, by the default command; redoing the quick "
                         "tier's (5 methods x 6 rates x 2 nets, --jobs 2) took 56 min on 2 cores.")
    sel.add_argument("--tier", required=True, help="a tier file with an lr_selection: block (quick, long)")
    sel.add_argument("--tiers", type=Path, default=Path("workflows/config/tiers"), help="folder of the tier files")
    sel.add_argument("--out", type=Path, default=Path("results/reference/lr-selection"),
                     help="where the selection runs and the choice are recorded (a folder per tier)")
    sel.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    sel.add_argument("--jobs", type=int, default=1, help="selection runs trained at once, one process each (e.g. "
                     "the number of cores, with --threads 1)")
    sel.add_argument("--data-root", default=None, help="else $SGBENCH_DATA, else ./data")

    rep = sub.add_parser("report", help="replication report (Markdown): every claim of [DNI], its verdict at this tier")
    rep.add_argument("--tier", required=True)
    rep.add_argument("--tables", type=Path, required=True, help="the folder `aggregate` wrote (both families)")
    rep.add_argument("--figures", type=Path, required=True, help="the folder `figures` wrote (linked, not read)")
    rep.add_argument("--out", type=Path, required=True, help="the report file, e.g. results/REPORT.md")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command in commands():
            train(commands()[args.command], args)
        elif args.command == "prepare-data":
            prepare_data(args)
        elif args.command == "aggregate":
            family = get(args.family)
            runtime.remove_stale_temps(args.out, family.outputs.values())  # of a killed earlier attempt
            family.tables().aggregate(args.metrics, args.tier, args.out)
        elif args.command == "figures":
            family = get(args.family)
            runtime.remove_stale_temps(args.out, [f"{n}.{s}" for n in family.figures for s in ("png", "pdf")])
            family.plots().draw(args.tier, args.tables, args.out)  # matplotlib: only here
        elif args.command == "select-lr":
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1 (torch CPU threads per run), got {args.threads}")
            if args.jobs < 1:
                raise ValueError(f"--jobs must be >= 1 (selection runs trained at once), got {args.jobs}")
            from .analysis.lr_selection import chosen_text
            from .families.feedforward.select_lr import run_selection
            lr = run_selection(args.tier, args.tiers, args.out, args.threads, args.data_root, args.jobs)
            print(f"tier {args.tier}: lr {chosen_text(lr)} (recorded in {args.tiers / (args.tier + '.yaml')} and "
                  f"{args.out / args.tier})")
        elif args.command == "report":
            check_tables(args.tier, args.tables)
            from .claims.render import write_report
            write_report(args.tier, args.tables, args.figures, args.out)
    except (ValueError, FileNotFoundError, MetricsError, RunError) as e:
        print(f"sgbench: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full disk: atomic writes leave nothing half-written
        print(f"sgbench: error: {os_error_text(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Timing runs restart by design; every other family's runs resume from their checkpoint.
        family = commands().get(args.command)
        then = "" if family is None else (" to start it afresh (a timing is not resumed)" if family.timing
                                          else " to resume from the last checkpoint")
        print(f"sgbench: interrupted; rerun the same command{then}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
