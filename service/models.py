"""The models clients may ask for, and what each means upstream.

ChatHub has three tones; `gpt-4` is Creative with the GPT-4 Turbo option sets, as the
seed product documented. Names match case-insensitively, so "creative" works too.
"""

from __future__ import annotations

import dataclasses

MODEL_CREATED = 1677610602  # a fixed, plausible `created` for /v1/models


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model id and the upstream settings it selects."""

    id: str
    tone: str
    gpt4_turbo: bool = False
    owned_by: str = "bing"

    def card(self) -> dict[str, object]:
        """The OpenAI `model` object for /v1/models."""
        return {"id": self.id, "object": "model", "created": MODEL_CREATED, "owned_by": self.owned_by}


CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec("Creative", tone="Creative"),
    ModelSpec("Balanced", tone="Balanced"),
    ModelSpec("Precise", tone="Precise"),
    ModelSpec("gpt-4", tone="Creative", gpt4_turbo=True),
)

_BY_NAME = {spec.id.lower(): spec for spec in CATALOG}


def find_model(name: str) -> ModelSpec | None:
    """The model called `name` (any case), or None."""
    return _BY_NAME.get(name.strip().lower())
