"""The worker's malloc tuning: applied on glibc, and an operator's own MALLOC_* settings win."""

from __future__ import annotations

import platform

import pytest

from workers import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt options are glibc's")


@glibc
def test_tune_sets_the_mmap_threshold_and_arena_count() -> None:
    assert allocator.tune({}) == {"MALLOC_MMAP_THRESHOLD_": 64 * 1024, "MALLOC_ARENA_MAX": 2}


@glibc
def test_an_operators_malloc_variables_are_left_to_glibc() -> None:
    assert allocator.tune({"MALLOC_ARENA_MAX": "4"}) == {"MALLOC_MMAP_THRESHOLD_": 64 * 1024}
    assert allocator.tune({"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "131072"}) == {}
