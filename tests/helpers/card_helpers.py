"""Reading the Python examples out of rendered model cards, so that tests can run them."""

import re


def section_code(card_text: str, heading: str) -> str:
    """The one ```python block of the card section titled ``heading`` (e.g. ``"## Usage"``)."""
    section = card_text.split(heading, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, section
    return blocks[0]
