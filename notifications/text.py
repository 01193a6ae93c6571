"""Text from people and ITSMs (a change's title) made safe for one-line fields: mail headers, iCalendar SUMMARY."""
from __future__ import annotations

import re
import unicodedata
from typing import Any


def one_line(value: Any) -> str:
    """CR, LF, tabs, other control characters and Unicode line/paragraph separators become single spaces (folding a
    long line is the writer's job, never the data's), so a title can neither break a message nor inject a field."""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in str(value or ""))
    return re.sub(r"\s+", " ", text).strip()
