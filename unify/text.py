"""Persian/Arabic text normalisation for display names and search — never for merging.

The same name is typed with Arabic or Persian letters (ي/ی, ك/ک), with or without diacritics,
with a zero-width non-joiner or a space («محمد‌رضا», «محمد رضا», «محمدرضا»), and digits in three
scripts. Search must find all spellings; identity never relies on names, because two people
share a name far more often than one person types theirs the same way twice.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise

# Arabic code points that Persian writes differently, and letters folded for search.
_LETTERS = str.maketrans(
    {
        "ي": "ی",  # Arabic yeh → Persian yeh
        "ى": "ی",  # alef maksura
        "ئ": "ی",
        "ك": "ک",  # Arabic kaf → Persian keheh
        "ة": "ه",  # teh marbuta
        "ۀ": "ه",  # heh with yeh above
        "ؤ": "و",
        "أ": "ا",
        "إ": "ا",
        "آ": "ا",
        "ٱ": "ا",
        "ـ": None,  # tatweel (kashida), decoration only
    }
)
_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
# harakat, tanwin, shadda, sukun, superscript alef, Quranic marks
_DIACRITICS = re.compile("[\u064b-\u065f\u0670\u06d6-\u06ed]")
_JOINERS = re.compile("[\u200c\u200d\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Fold a text for comparison: letters, digits, diacritics, joiners, case, spacing."""
    text = unicodedata.normalize("NFKC", text)
    text = _DIACRITICS.sub("", text)
    text = text.translate(_LETTERS).translate(_DIGITS)
    text = _JOINERS.sub("", text)  # «محمد‌رضا» and «محمدرضا» compare equal
    return " ".join(text.casefold().split())


def name_tokens(name: str | None) -> list[str]:
    """Search tokens of a display name; also the joined form of a two-part name so that
    «محمد رضا» is found by «محمدرضا»."""
    if not name:
        return []
    words = _TOKEN.findall(normalize_text(name))
    tokens = set(words)
    tokens.update(a + b for a, b in pairwise(words))
    return sorted(t for t in tokens if t)


def query_tokens(query: str) -> list[str]:
    """Tokens of a search query, in order (the last one may be a prefix)."""
    return _TOKEN.findall(normalize_text(query))
