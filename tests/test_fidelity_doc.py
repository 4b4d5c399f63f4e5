"""docs/fidelity.md names, under each rule of the original, the tests that check it: every
test it names exists, so the document cannot point at a test that was renamed or removed."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"`(test_\w+\.py)?::(test_\w+)")


def test_every_test_named_by_docs_fidelity_exists():
    text = (ROOT / "docs" / "fidelity.md").read_text()
    named, current = [], None
    for match in REFERENCE.finditer(text):
        current = match.group(1) or current  # `::test_x` continues the last file named
        assert current is not None, f"{match.group(0)} names no file before it"
        named.append((current, match.group(2)))
    assert len(named) > 50  # the pattern finds them
    missing = [
        f"{file}::{name}"
        for file, name in named
        if not re.search(rf"^def {name}\(", (ROOT / "tests" / file).read_text(), re.MULTILINE)
    ]
    assert not missing, f"docs/fidelity.md names tests that do not exist: {missing}"
