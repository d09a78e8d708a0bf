"""A key's limits: their shape, their defaults, and how an admin request sets them.

`Limits` holds requests per minute, concurrent turns, tokens per UTC day and allowed
model globs. On a key each is `None` (use the KEY_DEFAULT_* setting) or a value; a
numeric 0 means "no limit". Static `API_KEYS` get the defaults (`Limits.over`).
`parse_limits` reads them from an admin request body, naming a bad field. Managed keys
(`service.access.keys`) store them; `service.access.ratelimit` enforces them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

from service.errors import InvalidRequest

NUMERIC_LIMITS = ("rpm", "max_concurrent", "tokens_per_day")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-key limits; None = the setting's default, 0 = unlimited, models None = default."""

    rpm: int | None = None
    max_concurrent: int | None = None
    tokens_per_day: int | None = None
    models: tuple[str, ...] | None = None

    def over(self, defaults: Limits) -> Limits:
        """These limits with every None replaced by the default."""
        mine = dataclasses.asdict(self)
        return Limits(
            **{
                name: mine[name] if mine[name] is not None else value
                for name, value in dataclasses.asdict(defaults).items()
            }
        )

    def allows(self, model: str) -> bool:
        """Whether `model` matches one of the allowed globs (case-insensitive); no globs = all."""
        if not self.models:
            return True
        name = model.lower()
        return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in self.models)

    def to_json(self) -> dict[str, Any]:
        """JSON-plain form (the record's and the admin API's)."""
        return {
            "rpm": self.rpm,
            "max_concurrent": self.max_concurrent,
            "tokens_per_day": self.tokens_per_day,
            "models": list(self.models) if self.models is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        """Inverse of `to_json` (trusted data from our own records)."""
        models = data.get("models")
        return cls(
            rpm=data.get("rpm"),
            max_concurrent=data.get("max_concurrent"),
            tokens_per_day=data.get("tokens_per_day"),
            models=tuple(models) if models is not None else None,
        )


def parse_limits(body: dict[str, Any], base: Limits | None = None) -> Limits:
    """Limits from an admin request body, over `base`; `InvalidRequest` names a bad field.

    Only the fields present change; `null` resets one to the default.
    """
    current = (base or Limits()).to_json()
    for name in NUMERIC_LIMITS:
        if name not in body:
            continue
        value = body[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidRequest(f"'{name}' must be a whole number ≥ 0 (0 = no limit) or null.", param=name)
        current[name] = value
    if "models" in body:
        models = body["models"]
        if models is not None and (
            not isinstance(models, list)
            or not models
            or not all(isinstance(m, str) and m.strip() for m in models)
        ):
            raise InvalidRequest(
                "'models' must be a non-empty list of model names or globs (e.g. [\"gpt-4*\"]), or null.",
                param="models",
            )
        current["models"] = [m.strip() for m in models] if models is not None else None
    return Limits.from_json(current)
