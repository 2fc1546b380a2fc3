"""`sgbench` command line. Every config field is a flag; `--config FILE` (YAML/JSON) sets many at once.

Precedence: dataclass defaults < config file < flags given on the command line. The training
subcommands, `aggregate` and `figures` come from the family registry (sgbench/families). Parsing
the command line imports no torch: a runner (and torch) is imported when a run starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from . import __version__, runtime
from .analysis.tables import MetricsError
from .catalog import DATASETS
from .families import FAMILIES, commands, get
from .runtime import RunError


def _flag_type(tp):
    """argparse type for a dataclass field annotation (str | None, list[float], bool, ...)."""
    if typing.get_origin(tp) is list:
        base = tp
    else:  # X | None -> X
        base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
    if typing.get_origin(base) is list:
        inner = typing.get_args(base)[0]
        return lambda s: [inner(v) for v in s.split(",") if v]
    return base


def add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    hints = typing.get_type_hints(config_cls)
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        text = f"default: {','.join(map(str, default)) if isinstance(default, list) else default}"
        if f.name in config_cls.CHOICES:
            text = f"one of {', '.join(config_cls.CHOICES[f.name])}; {text}"
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=f.name, type=_flag_type(hints[f.name]), default=None,
                                metavar=f.name.upper(), help=text)
    parser.add_argument("--config", type=Path, help="YAML or JSON file of config keys (flags override it)")


def read_config_file(path: Path) -> dict:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def build_config(config_cls, args: argparse.Namespace):
    values = read_config_file(args.config) if args.config else {}
    names = {f.name for f in dataclasses.fields(config_cls)}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return config_cls.from_dict(values)


def prepare_data(args) -> None:
    from .data import load_dataset, resolve_data_root  # torch: only for this command
    data = load_dataset(args.dataset, resolve_data_root(args.data_root), download=args.download)
    found = {"requested": args.dataset, "variant": data.name, "source": data.source,
             "n_train": len(data.train_y), "n_test": len(data.test_y), "input_shape": list(data.input_shape)}
    print(json.dumps(found))
    if args.out:
        runtime.atomic_write_json(args.out, found)


# What each training subcommand says in --help (the families that share a runner share its command).
TRAIN_HELP = {
    "train-ff": ("one feed-forward run (MNIST/CIFAR-10, FCN/CNN, backprop/dni/cdni/no_bprop/unlock/cunlock)",
                 "One feed-forward run. Defaults are the paper's ([DNI] supplement); sg_hidden_layers/sg_hidden_dim "
                 "unset = the paper's SG for that arch and method; eval_every 0 = 20 evaluations per run."),
    "train-rnn": ("one RNN run (copy / repeat copy; bptt / dni / dni_aux; truncation T)",
                  "One copy or repeat-copy run with a curriculum, as in [DNI] Sec. 3.1. Values [DNI] does not give "
                  "are sgbench's choices (see RNNConfig)."),
    "train-parallel": ("one feed-forward run on K worker processes (backprop: locked pipeline; gpipe / 1f1b: "
                       "micro-batched pipelines; ddp_split / ddp_keep: data parallel; dni / cdni: update-unlocked "
                       "stages)",
                       "One feed-forward run on `workers` processes (torch.distributed), measuring throughput and "
                       "seconds to each of `targets` (test errors). Restarts from scratch when rerun."),
}


def add_train_commands(sub) -> None:
    for command, family in commands().items():
        short, long = TRAIN_HELP.get(command, (family.summary, family.summary))
        p = sub.add_parser(command, help=short, description=long)
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
            family = commands()[args.command]
            config = build_config(family.config_class(), args)
            config.resolved()
            family.train(config, args.out)
        elif args.command == "prepare-data":
            prepare_data(args)
        elif args.command == "aggregate":
            get(args.family).tables().aggregate(args.metrics, args.tier, args.out)
        elif args.command == "figures":
            get(args.family).plots().draw(args.tier, args.tables, args.out)  # matplotlib: only here
        elif args.command == "report":
            from .claims.render import write_report
            write_report(args.tier, args.tables, args.figures, args.out)
    except (ValueError, FileNotFoundError, MetricsError, RunError) as e:
        print(f"sgbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = "resume from the last checkpoint" if args.command == "train-ff" else "start it afresh"
        print(f"sgbench: interrupted; rerun the same command to {resume}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
