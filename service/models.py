"""The models clients may ask for, per upstream, and what each means there.

ChatHub (`UPSTREAM=bing`) has three tones; `gpt-4` is Creative with the GPT-4 Turbo
option sets, as the seed product documented. Copilot (`UPSTREAM=copilot`) has modes:
`copilot` is "Quick response" (`chat`), `think-deeper` is `reasoning`, `gpt-5` is
`smart`; the seed names keep working there, mapped onto the nearest mode (see the
README's table). Names match case-insensitively, so "creative" works too.
"""

from __future__ import annotations

import dataclasses

MODEL_CREATED = 1677610602  # a fixed, plausible `created` for /v1/models


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model id and the upstream settings it selects."""

    id: str
    tone: str = "Balanced"
    gpt4_turbo: bool = False
    mode: str = "chat"
    owned_by: str = "bing"

    def card(self) -> dict[str, object]:
        """The OpenAI `model` object for /v1/models."""
        return {"id": self.id, "object": "model", "created": MODEL_CREATED, "owned_by": self.owned_by}


CATALOGS: dict[str, tuple[ModelSpec, ...]] = {
    "bing": (
        ModelSpec("Creative", tone="Creative"),
        ModelSpec("Balanced", tone="Balanced"),
        ModelSpec("Precise", tone="Precise"),
        ModelSpec("gpt-4", tone="Creative", gpt4_turbo=True),
    ),
    "copilot": (
        ModelSpec("copilot", mode="chat", owned_by="copilot"),
        ModelSpec("think-deeper", mode="reasoning", owned_by="copilot"),
        ModelSpec("gpt-5", mode="smart", owned_by="copilot"),
        ModelSpec("Creative", tone="Creative", mode="chat", owned_by="copilot"),
        ModelSpec("Balanced", tone="Balanced", mode="chat", owned_by="copilot"),
        ModelSpec("Precise", tone="Precise", mode="reasoning", owned_by="copilot"),
        ModelSpec("gpt-4", tone="Creative", gpt4_turbo=True, mode="smart", owned_by="copilot"),
    ),
}


def catalog(upstream: str) -> tuple[ModelSpec, ...]:
    """The models the given upstream accepts."""
    return CATALOGS[upstream]


def find_model(name: str, upstream: str) -> ModelSpec | None:
    """The model called `name` (any case) on `upstream`, or None."""
    wanted = name.strip().lower()
    return next((spec for spec in CATALOGS[upstream] if spec.id.lower() == wanted), None)
