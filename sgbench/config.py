"""The base of every run-config dataclass (one per run kind): built from known keys only, values
checked with messages that name the fix. Torch-free, so the workflow can expand grids without torch."""
from __future__ import annotations

import dataclasses


class RunConfig:
    """Subclasses are dataclasses and set CHOICES {field: allowed values}."""
    CHOICES: dict = {}

    @classmethod
    def from_dict(cls, d: dict):
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
