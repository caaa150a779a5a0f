"""config/synthetic.toml: the distributions of the synthetic population, read once."""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ..config import PROJECT_ROOT

DEFAULT_FILE = PROJECT_ROOT / "config" / "synthetic.toml"


@dataclass(frozen=True)
class Settings:
    raw: dict
    as_of: date
    path: Path

    def __getitem__(self, section: str) -> Any:
        return self.raw[section]


def load_settings(path: Path | None = None, as_of: date | None = None) -> Settings:
    path = path or DEFAULT_FILE
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    return Settings(raw, as_of or date.fromisoformat(raw["population"]["as_of"]), path)


def weighted(rng: random.Random, table: dict) -> Any:
    """One key of a {value: weight} table (TOML keys are strings; numeric keys come back as int)."""
    keys = list(table)
    value = rng.choices(keys, weights=[float(table[k]) for k in keys])[0]
    try:
        return int(value)
    except ValueError:
        return value
