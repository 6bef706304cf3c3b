"""docs/osc-api.md is generated from the message table and must be current."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from stemdeck.control import docs, spec

DOC = Path(__file__).resolve().parent.parent / "docs" / "osc-api.md"


def test_osc_api_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == docs.generate(), (
        "docs/osc-api.md is stale: run  python -m stemdeck.control.docs > docs/osc-api.md")


def test_every_message_is_documented_with_an_example():
    text = docs.generate()
    for msg in spec.MESSAGES:
        assert f"### `{msg.address}`" in text
        assert f"```\n{msg.example}\n```" in text
        assert msg.usage() in text
        for arg in msg.args:
            assert f"| `{arg.name}" in text
        # the example is a valid message
        spec.parse(msg.address, shlex.split(msg.example)[1:])
    for name, _, _ in spec.STATUS_FIELDS:
        assert f"`{name}`" in text


def test_module_prints_the_doc():
    out = subprocess.run([sys.executable, "-m", "stemdeck.control.docs"], capture_output=True,
                         text=True, check=True).stdout
    assert out == docs.generate()
