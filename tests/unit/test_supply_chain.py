"""The hash locks match their human-edited sources, every install uses them, and the SBOM is sane.

Offline: reads files and runs `deploy/sbom` (which reads only the runtime lock). When
this fails after editing a requirements*.txt, run `deploy/lock`.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {
    "requirements.txt": "requirements.lock",
    "requirements-dev.txt": "requirements-dev.lock",
    "requirements-agents.txt": "requirements-agents.lock",
    "requirements-sbom.txt": "requirements-sbom.lock",
}
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def source_pins(name: str) -> dict[str, str]:
    """Every requirement of a source file (following `-r`), as {canonical name: exact version}."""
    pins: dict[str, str] = {}
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            pins.update(source_pins(line.split(None, 1)[1]))
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{name}: {line} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins


def lock_entries(name: str) -> dict[str, tuple[str, int]]:
    """A lock's packages: {canonical name: (version, number of hashes)}."""
    entries: dict[str, tuple[str, int]] = {}
    current = ""
    for line in (ROOT / name).read_text().splitlines():
        match = ENTRY.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            entries[current] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
        elif line.strip() and not line.lstrip().startswith("#"):
            pytest.fail(f"{name}: unexpected line {line!r}")
    return entries


@pytest.mark.parametrize(("source", "lock"), LOCKS.items())
def test_each_lock_holds_its_sources_pins_with_hashes(source: str, lock: str) -> None:
    entries = lock_entries(lock)
    pins = source_pins(source)
    missing = {name: version for name, version in pins.items() if name not in entries}
    assert not missing, f"{lock} lacks {missing}: run deploy/lock"
    moved = {
        name: (version, entries[name][0]) for name, version in pins.items() if entries[name][0] != version
    }
    assert not moved, f"{lock} pins other versions (source, lock): {moved}: run deploy/lock"
    unhashed = sorted(name for name, (_, hashes) in entries.items() if hashes == 0)
    assert not unhashed, f"{lock}: no hashes for {unhashed}"
    assert f" {source}" in (ROOT / lock).read_text().split("\n\n", 1)[0], (
        f"{lock} was not compiled from {source}"
    )


def test_the_dev_lock_runs_the_runtime_lock_unchanged() -> None:
    runtime, dev = lock_entries("requirements.lock"), lock_entries("requirements-dev.lock")
    differ = {
        name: (v, dev.get(name, ("absent", 0))[0])
        for name, (v, _) in runtime.items()
        if dev.get(name, ("", 0))[0] != v
    }
    assert not differ, f"the dev lock tests other runtime versions: {differ}"


@pytest.mark.parametrize(
    ("path", "lock"),
    [
        ("deploy/start", "requirements.lock"),
        ("deploy/Dockerfile", "requirements.lock"),
        ("render.yaml", "requirements.lock"),
        ("deploy/test", "requirements-dev.lock"),
        ("deploy/bench", "requirements-dev.lock"),
        ("deploy/sbom", "requirements-sbom.lock"),
        ("tests/integration/test_agents_sdk.py", "requirements-agents.lock"),
    ],
)
def test_every_install_uses_a_lock_with_require_hashes(path: str, lock: str) -> None:
    text = (ROOT / path).read_text()
    assert "--require-hashes" in text and lock in text, path
    assert not re.search(r"install[^\n]*-r\s+\S*requirements[\w-]*\.txt", text), (
        f"{path} installs an unlocked set"
    )


def test_the_sbom_lists_the_runtime_set(tmp_path: Path) -> None:
    output = tmp_path / "sbom.json"
    subprocess.run([str(ROOT / "deploy" / "sbom"), str(output)], cwd=ROOT, check=True, timeout=300)
    bom = json.loads(output.read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    components: dict[str, Any] = {canonicalize_name(c["name"]): c for c in bom["components"]}
    locked = lock_entries("requirements.lock")
    assert set(components) == set(locked)
    for name, (version, hashes) in locked.items():
        component = components[name]
        assert component["version"] == version and component["purl"] == f"pkg:pypi/{name}@{version}"
        digests = [h for ref in component.get("externalReferences", []) for h in ref.get("hashes", [])]
        assert len(digests) == hashes and all(h["alg"] == "SHA-256" for h in digests), name
