"""The base of every run-config dataclass (one per run kind): built from known keys only, every
value's type checked (with the few safe coercions users expect) and its range checked, with
messages that name the key and the fix. Torch-free, so the workflow can expand grids without torch.

Types are checked wherever a value comes from: flags (always text), config files (PyYAML reads
`1e-4` as text and `20.5` as a float), tier settings (the Snakefile's grid expansion calls the
same check, so a bad tier is refused when the DAG is built) and Python code.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import math
import tokenize
import types
import typing

# How config files and `--config key=value` spell booleans.
BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}


class ConfigTypeError(ValueError):
    """A config value of the wrong type; the message names the key and what it should be."""


def _key(name: str) -> str:
    """How a key is named in errors: as a config key and as its flag."""
    return f"{name} (--{name.replace('_', '-')})"


def _as_int(name: str, value):
    """Whole numbers only. 32, "32", and a float that is exactly whole (32.0, "5e5") are accepted:
    they name one integer without doubt (YAML reads `iterations: 5e5` as text, and tier files like
    to write budgets that way). 20.5 or "64.5" are refused rather than rounded: rounding would
    silently train another config than the one written."""
    if isinstance(value, bool):
        raise ConfigTypeError(f"{_key(name)}: expected a whole number, got the boolean {value}")
    if isinstance(value, int):
        return value
    number = value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise ConfigTypeError(f"{_key(name)}: expected a whole number, got {value!r}") from None
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        return int(number)
    raise ConfigTypeError(f"{_key(name)}: expected a whole number, got {value!r}"
                          + (" (not rounded: write the integer you mean)" if isinstance(number, float) else ""))


# float32's range: every float setting ends up in float32 tensors (a learning rate in Adam's state, a
# scale multiplying a gradient), where a larger magnitude overflows (torch: "value cannot be converted
# to type float without overflow") and a smaller nonzero one silently becomes 0.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.401298464324817e-45  # the smallest positive (subnormal) float32


def _as_float(name: str, value):
    """Numbers, and text that reads as one ("1e-4": PyYAML leaves exponents without a dot as text).
    NaN and infinities are refused: no setting means them; so are magnitudes outside float32's range."""
    if isinstance(value, bool):
        raise ConfigTypeError(f"{_key(name)}: expected a number, got the boolean {value}")
    if isinstance(value, (int, float)) or isinstance(value, str):
        try:
            number = float(value)
        except (ValueError, OverflowError):  # OverflowError: an int beyond any float
            raise ConfigTypeError(f"{_key(name)}: expected a number, got {value!r}") from None
        if math.isfinite(number) and (number == 0 or FLOAT32_TINY <= abs(number) <= FLOAT32_MAX):
            return number
        if math.isfinite(number):
            raise ConfigTypeError(f"{_key(name)}: {value!r} is outside float32's range, which the run computes in "
                                  f"(magnitudes {FLOAT32_TINY:.1e} to {FLOAT32_MAX:.1e}, or 0); give a value in it")
    raise ConfigTypeError(f"{_key(name)}: expected a finite number, got {value!r}")


def _as_bool(name: str, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[value.strip().lower()]
    raise ConfigTypeError(f"{_key(name)}: expected true or false, got {value!r}")


def _as_str(name: str, value):
    if isinstance(value, str):
        return value
    raise ConfigTypeError(f"{_key(name)}: expected text, got {value!r} ({type(value).__name__})")


SCALARS = {int: _as_int, float: _as_float, bool: _as_bool, str: _as_str}


def coerce(name: str, tp, value):
    """`value` as the annotation `tp` says (int, float, bool, str, list[X], X | None), or ConfigTypeError."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{name}: unsupported annotation {tp}")
        return coerce(name, inner[0], value)
    if typing.get_origin(tp) is list:
        if isinstance(value, str):  # a flag: "0.6,0.8"
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigTypeError(f"{_key(name)}: expected a list (or comma-separated values), got {value!r}")
        return [coerce(name, args[0], v) for v in value]
    if tp in SCALARS:
        if value is None:
            raise ConfigTypeError(f"{_key(name)}: a value is required, got null")
        return SCALARS[tp](name, value)
    raise TypeError(f"{name}: unsupported annotation {tp}")


def field_help(cls) -> dict[str, str]:
    """{field: the comment on its line in the class body}: the config classes explain each field
    there, once, and `--help` shows the same words."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if dataclasses.is_dataclass(klass):
            helps |= _comments(klass, {f.name for f in dataclasses.fields(klass)})
    return helps


def _comments(klass, names: set[str]) -> dict[str, str]:
    try:
        source = inspect.getsource(klass)
    except (OSError, TypeError):  # no source (a frozen build): help without explanations
        return {}
    helps, line_names = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in names and tok.start[1] == 4:
            line_names.setdefault(tok.start[0], tok.string)
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_names:
            helps[line_names[tok.start[0]]] = tok.string.lstrip("#").strip()
    return helps


class RunConfig:
    """Subclasses are dataclasses and set CHOICES {field: allowed values}. Every value is checked
    against its annotation when the object is made (from_dict, the constructor, dataclasses.replace)."""
    CHOICES: dict = {}
    LEGACY: dict = {}  # retired key -> the one value it may still hold in a recorded config (see without_legacy)
    # key added after runs were recorded -> the value every run recorded without it had (see as_recorded)
    ADDED: dict = {"precision": "fp32"}

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce(f.name, hints[f.name], getattr(self, f.name)))

    @classmethod
    def without_legacy(cls, d: dict) -> dict:
        """`d` without the retired keys (LEGACY) that hold the value every run had: a recorded config
        (metrics.json) written before a key was retired means the same run. Another value stays, and
        is refused (from_dict) or differs (a finished-run check): no run of this class took it."""
        return {k: v for k, v in d.items() if not (k in cls.LEGACY and v == cls.LEGACY[k])}

    @classmethod
    def as_recorded(cls, d: dict) -> dict:
        """A recorded config (metrics.json) as this code would record the same run: without the retired
        keys at their only value (without_legacy), with the keys added since at the value those runs had
        (ADDED: a run from before issue #26 trained in fp32), so a finished-run check counts it as the
        same run instead of retraining every committed run."""
        return {k: v for k, v in cls.ADDED.items() if k not in d} | cls.without_legacy(d)

    def differences(self, recorded: dict, skip=frozenset()) -> dict[str, tuple]:
        """{key: (recorded value, this config's)} for every key but `skip` (the fields that set no number)
        in which a recorded config (metrics.json, read as_recorded) differs from this one: empty for the
        same run. The finished-run checks (`sgbench train-*`, `select-lr`) use it."""
        new = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        old = {k: v for k, v in self.as_recorded(recorded).items() if k not in skip}
        return {k: (old.get(k), new.get(k)) for k in sorted(new.keys() | old.keys()) if new.get(k) != old.get(k)}

    @classmethod
    def from_dict(cls, d: dict):
        d = cls.without_legacy(d)
        retired = sorted(set(d) & set(cls.LEGACY))
        if retired:
            raise ValueError(f"retired config key(s) {', '.join(f'{k}={d[k]!r}' for k in retired)}: accepted only at "
                             f"the value every run had ({', '.join(f'{k}={cls.LEGACY[k]!r}' for k in retired)}); "
                             "remove them")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(names))}")
        return cls(**d)

    def check(self, rules) -> None:
        """Raise ValueError with the message of the first (ok, message) rule that fails; CHOICES first."""
        choices = [(getattr(self, key) in options,
                    f"unknown {key} {getattr(self, key)!r}: choose one of {', '.join(options)}")
                   for key, options in self.CHOICES.items()]
        for ok, message in [*choices, *rules]:
            if not ok:
                raise ValueError(message)


def precision_tag(point: dict) -> str:
    """A run name's precision part: "" for fp32 (so every name from before issue #26 stands), else
    "-bf16" / "-tf32", so a tier may grid over precision without two runs sharing one folder."""
    precision = point.get("precision", "fp32")
    return "" if precision == "fp32" else f"-{precision}"


def adam_tag(point: dict) -> str:
    """A run name's Adam part: "" for the for-loop Adam (every name from before it could be chosen stands),
    "-fused-adam" for the fused kernel, so a run of each can sit side by side (benchmarks/precision_parity.py)."""
    return "" if point.get("adam", "for-loop") == "for-loop" else f"-{point['adam']}-adam"
