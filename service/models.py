"""The models clients may ask for, per upstream, and what each means there.

ChatHub (`UPSTREAM=bing`) has three tones; `gpt-4` is Creative with the GPT-4 Turbo
option sets, as the seed product documented. Copilot (`UPSTREAM=copilot`) has modes:
`copilot` is "Quick response" (`chat`), `think-deeper` is `reasoning`, `gpt-5` is
`smart`; the seed names keep working there, mapped onto the nearest mode (see the
table in docs/api.md). Names match case-insensitively, so "creative" works too.

Clients default to model names of their own (LangChain `gpt-3.5-turbo`, Codex CLI
`gpt-5…-codex`, Claude Code `claude-opus-…`), so names that are not in the catalog go
through aliases: glob → catalog model, the `MODEL_ALIASES` setting's first, then the
upstream's defaults (`DEFAULT_ALIASES`), first match wins. Aliases are a courtesy, not
models, so `/v1/models` does not list them; it lists the catalog and, beside it, one
`claude-…` id per distinct upstream setting (`picker_ids`): Claude Code's `/model` picker
shows only ids containing "claude" or "anthropic", and each of these maps to a catalog model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fnmatch import fnmatchcase

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


Aliases = Sequence[tuple[str, str]]

DEFAULT_ALIASES: dict[str, tuple[tuple[str, str], ...]] = {
    "copilot": (
        ("claude-*", "copilot"),
        ("gpt-3.5*", "copilot"),
        ("gpt-4o*", "copilot"),
        ("gpt-4.1*", "copilot"),
        ("chatgpt-*", "copilot"),
        ("o1*", "think-deeper"),
        ("o3*", "think-deeper"),
        ("o4*", "think-deeper"),
        ("gpt-5*", "gpt-5"),
        ("codex-*", "gpt-5"),
        ("gpt-*", "copilot"),  # any other OpenAI model (Codex CLI's next default included)
    ),
    "bing": (
        ("claude-*", "Balanced"),
        ("gpt-3.5*", "Balanced"),
        ("gpt-4o*", "Balanced"),
        ("gpt-4.1*", "Creative"),
        ("chatgpt-*", "Balanced"),
        ("o1*", "Precise"),
        ("o3*", "Precise"),
        ("o4*", "Precise"),
        ("gpt-5*", "gpt-4"),
        ("codex-*", "gpt-4"),
        ("gpt-*", "Balanced"),
        ("copilot", "Balanced"),  # the Copilot dialect's default name, so one client config fits both
    ),
}
"""What common client defaults mean on each upstream when MODEL_ALIASES does not say."""

MODEL_HELP = "GET /v1/models lists the models here; MODEL_ALIASES maps other names onto them."
"""Appended to every `model_not_found` message: where to look, and what to set."""


def unknown_model_message(name: str) -> str:
    """The OpenAI-worded `model_not_found` message, with where to look and what to set."""
    return f"The model `{name}` does not exist or you do not have access to it. {MODEL_HELP}"


def parse_aliases(value: str) -> tuple[tuple[str, str], ...]:
    """`glob=model,glob=model` as pairs; raises ValueError on an entry without both sides."""
    pairs = []
    for entry in value.split(","):
        if not entry.strip():
            continue
        pattern, sep, target = entry.partition("=")
        if not sep or not pattern.strip() or not target.strip():
            raise ValueError(f"entry {entry.strip()!r} is not glob=model")
        pairs.append((pattern.strip(), target.strip()))
    return tuple(pairs)


def catalog(upstream: str) -> tuple[ModelSpec, ...]:
    """The models the given upstream accepts."""
    return CATALOGS[upstream]


def picker_ids(upstream: str) -> tuple[tuple[str, ModelSpec], ...]:
    """Claude Code picker ids and the catalog model each means: `claude-copilot`,
    `claude-copilot-think-deeper`, … — one per distinct upstream setting, first catalog entry wins."""
    seen: set[tuple[str, bool, str]] = set()
    ids = []
    for spec in CATALOGS[upstream]:
        setting = (spec.tone, spec.gpt4_turbo, spec.mode) if upstream == "bing" else ("", False, spec.mode)
        if setting in seen:
            continue
        seen.add(setting)
        name = spec.id.lower()
        ids.append((f"claude-{name}" if name == upstream else f"claude-{upstream}-{name}", spec))
    return tuple(ids)


def find_model(name: str, upstream: str, aliases: Aliases = ()) -> ModelSpec | None:
    """The model called `name` (any case) on `upstream`, else what an alias maps it to, or None."""
    wanted = name.strip().lower()
    spec = next((spec for spec in CATALOGS[upstream] if spec.id.lower() == wanted), None)
    if spec is not None or not wanted:
        return spec
    spec = next((spec for picker, spec in picker_ids(upstream) if picker == wanted), None)
    if spec is not None:
        return spec
    for pattern, target in (*aliases, *DEFAULT_ALIASES[upstream]):
        if fnmatchcase(wanted, pattern.lower()):
            return find_model(target, upstream)
    return None
