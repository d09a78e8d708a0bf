"""Priming a new upstream conversation with more context than one turn may carry.

The planning is pure and shared with the web tier, which counts the same turns at the
door (`service.turn_plan`); this module keeps the worker's name for it. The turn runner
sends what `plan` returns.
"""

from __future__ import annotations

from service.turn_plan import FINAL, LONG_PROMPT, OVERHEAD, PART, Plan, plan, split

__all__ = ["FINAL", "LONG_PROMPT", "OVERHEAD", "PART", "Plan", "plan", "split"]
