"""`sgbench` command line. Every config field is a flag; `--config FILE` (YAML/JSON) sets many at once.

Precedence: dataclass defaults < config file < flags given on the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from . import __version__, runio
from .data import DATASETS, DataNotFoundError, load_dataset, resolve_data_root
from .report import MetricsError, write_ff_summary
from .train_ff import FFConfig, train_ff


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
    data = load_dataset(args.dataset, resolve_data_root(args.data_root), download=args.download)
    found = {"requested": args.dataset, "variant": data.name, "source": data.source,
             "n_train": len(data.train_y), "n_test": len(data.test_y), "input_shape": list(data.input_shape)}
    print(json.dumps(found))
    if args.out:
        runio.atomic_write_json(args.out, found)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sgbench", description="Synthetic-gradient (DNI) replication benchmark")
    parser.add_argument("--version", action="version", version=f"sgbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ff = sub.add_parser("train-ff", help="one feed-forward run (MNIST/CIFAR-10, FCN/CNN, backprop/dni/cdni/no_bprop)",
                        description="One feed-forward run. Defaults are the paper's ([DNI] supplement); "
                        "sg_hidden_layers/sg_hidden_dim unset = the paper's SG for that arch and method; "
                        "eval_every 0 = 20 evaluations per run.")
    ff.add_argument("--out", type=Path, required=True, help="run folder: metrics.json (and a checkpoint while running)")
    add_config_flags(ff, FFConfig)
    ff.add_argument("--quiet", action="store_true", help="log warnings only")

    prep = sub.add_parser("prepare-data", help="check a data set is readable (decode + cache CIFAR JPEGs once)")
    prep.add_argument("--dataset", required=True, choices=DATASETS)
    prep.add_argument("--data-root", default=None, help="else $SGBENCH_DATA, else ./data")
    prep.add_argument("--download", action="store_true", help="let torchvision download it if missing")
    prep.add_argument("--out", type=Path, help="write what was found (variant, source, sizes) as JSON here")

    summ = sub.add_parser("summarize", help="feed-forward metrics.json files -> Table-1-style Markdown + CSV")
    summ.add_argument("metrics", nargs="+", type=Path)
    summ.add_argument("--md", type=Path, required=True)
    summ.add_argument("--csv", type=Path, required=True)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command == "train-ff":
            config = build_config(FFConfig, args)
            config.resolved()
            train_ff(config, args.out)
        elif args.command == "prepare-data":
            prepare_data(args)
        elif args.command == "summarize":
            write_ff_summary(args.metrics, args.md, args.csv)
            print(args.md.read_text())
    except (ValueError, DataNotFoundError, FileNotFoundError, MetricsError) as e:
        print(f"sgbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sgbench: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
