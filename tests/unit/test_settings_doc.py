"""docs/configuration.md is generated from service/runtime/settings.py and must not drift from it (#17)."""

from __future__ import annotations

import dataclasses
import re

from service import settings_doc
from service.runtime.settings import Settings, load_settings


def test_the_committed_page_is_what_the_settings_generate() -> None:
    committed = settings_doc.PAGE.read_text()
    assert committed == settings_doc.render(), (
        "docs/configuration.md is out of date: run `python -m service.settings_doc --write`"
    )


def test_every_setting_is_on_the_page_with_its_default_and_a_meaning() -> None:
    rows = {row.name: row for row in settings_doc.rows()}
    # Each documented name really is read: setting it to garbage must be refused or change a field.
    # One row per setting; api_key_groups is parsed out of API_KEYS (`key@group`), not a setting.
    derived = {"api_key_groups"}
    assert len(rows) == len([f for f in dataclasses.fields(Settings) if f.name not in derived])
    assert rows["ACCOUNT_RPM"].default == "`12`" and "sliding minute" in rows["ACCOUNT_RPM"].meaning
    assert rows["TOOL_EMULATION"].default == "`on`"
    assert rows["SECRET_KEY"].default == "empty" and "DATA_DIR" in rows["SECRET_KEY"].meaning
    assert all(row.meaning and not row.meaning.startswith(row.name) for row in rows.values())
    assert all(re.fullmatch(r"[A-Z_]+", name) for name in rows)
    # A default shown is the default parsed: the page's defaults load back into Settings().
    shown = {
        name: row.default.strip("`")
        for name, row in rows.items()
        if row.default.startswith("`") and name not in ("UPSTREAM_COOKIES",)
    }
    assert load_settings(shown) == Settings()
