"""Text element values made safe at read time: NUL and other control characters removed, with a flag.

Sloppy scanners leave a NUL inside (0010,0020) Patient ID or (0008,0050) Accession Number; PostgreSQL refuses
a NUL in a text column, and a control character in an identifier is never meant. Trailing NUL and space
padding is stripped silently (PS3.5 6.2 pads with them); anything else removed sets the flag, which travels
with the scan (``Scan.text_cleaned``) and is shown on its measurement row (flag ``text_cleaned``).
"""

from __future__ import annotations

import re

# C0 controls and DEL, except TAB, LF, FF, CR (allowed in LT/ST/UT) and ESC (character set switching, PS3.5 6.1.2.5).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
TEXT_CLEANED_FLAG = "text_cleaned"


def clean_text(value: object) -> tuple[str, bool]:
    """``value`` as text without padding and control characters; True when control characters were removed.

    Example:
        >>> clean_text("AB\\x00CD\\x00 ")
        ('ABCD', True)
    """
    text = "" if value is None else str(value)
    core = text.strip("\x00 ")
    cleaned = _CONTROL.sub("", core)
    return cleaned.strip(), cleaned != core
