"""The partner registry (config/partners.toml): who we exchange with, and where."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..config import PROJECT_ROOT

DEFAULT_FILE = PROJECT_ROOT / "config" / "partners.toml"


@dataclass(frozen=True)
class Partner:
    ods: str
    name: str
    role: str = ""
    base_url: str | None = None
    pathways: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeliveryRules:
    max_attempts: int = 8
    base_seconds: float = 2.0
    max_seconds: float = 300.0
    lease_seconds: float = 60.0
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Registry:
    self_ods: str
    partners: dict[str, Partner] = field(default_factory=dict)
    delivery: DeliveryRules = DeliveryRules()

    def get(self, ods: str) -> Partner | None:
        return self.partners.get(ods)


def load_registry(path: Path | None = None) -> Registry:
    path = path or Path(os.environ.get("ADAPTER_PARTNERS", DEFAULT_FILE))
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    partners = {}
    for entry in raw.get("partner", []):
        partner = Partner(ods=entry["ods"], name=entry.get("name", entry["ods"]), role=entry.get("role", ""),
                          base_url=(entry.get("base_url") or "").rstrip("/") or None,
                          pathways=tuple(entry.get("pathways", ())))
        partners[partner.ods] = partner
    delivery = DeliveryRules(**{k: v for k, v in raw.get("delivery", {}).items()
                                if k in DeliveryRules.__dataclass_fields__})
    return Registry(self_ods=raw.get("self", {}).get("ods", ""), partners=partners, delivery=delivery)


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    return load_registry()
