import pytest

from unify.text import name_tokens, normalize_text, query_tokens


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("علي", "علی"),  # Arabic yeh
        ("كريم", "کریم"),  # Arabic kaf
        ("فاطمة", "فاطمه"),  # teh marbuta
        ("مُحَمَّد", "محمد"),  # diacritics
        ("محمد‌رضا", "محمدرضا"),  # ZWNJ
        ("مـــحمد", "محمد"),  # tatweel
        ("  Ali   REZAEI ", "ali rezaei"),
        ("۱۲۳ ١٢٣", "123 123"),
    ],
)
def test_spellings_of_one_name_compare_equal(a: str, b: str) -> None:
    assert normalize_text(a) == normalize_text(b)


def test_tokens_find_two_part_names_written_together_or_apart() -> None:
    assert "محمدرضا" in name_tokens("محمد رضا احمدی")
    assert set(query_tokens("محمد‌رضا")) <= set(name_tokens("محمد رضا"))
    assert name_tokens(None) == [] and name_tokens("  ") == []


def test_different_names_stay_different() -> None:
    assert normalize_text("علی") != normalize_text("عالی")
