"""The console's files keep the rules that make injected markup impossible, and both languages
have every string the page asks for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.console import CSP, SECURITY_HEADERS
from router.console.routes import STATIC, TYPES

SCRIPTS = sorted(STATIC.glob("*.js"))
HTML = (STATIC / "index.html").read_text(encoding="utf-8")


def test_there_is_a_console_to_check() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"app.js", "api.js", "stream.js", "timeline.js", "offers.js", "i18n.js"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_never_turn_strings_into_markup_or_code(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setTimeout("',
        "createContextualFragment",
        "DOMParser",
    ):
        assert sink not in source, f"{path.name} uses {sink}"


def test_the_page_has_no_inline_script_style_or_handlers() -> None:
    scripts = re.findall(r"<script\b[^>]*>", HTML)
    assert scripts and all(re.search(r'\bsrc="/console/[a-z]+\.js"', s) for s in scripts)
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", HTML)  # nothing between the tags
    assert not re.search(r"\son[a-z]+\s*=", HTML)
    assert not re.search(r"\sstyle\s*=", HTML) and "<style" not in HTML


def test_email_html_frames_are_sandboxed_without_scripts() -> None:
    timeline = (STATIC / "timeline.js").read_text(encoding="utf-8")
    frame = re.search(r'h\("iframe", \{([^}]*)\}\)', timeline)
    assert frame is not None and 'sandbox: ""' in frame.group(1)
    assert "allow-" not in timeline


def test_the_policy_allows_only_the_console_itself() -> None:
    directives = dict(d.split(" ", 1) for d in CSP.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"  # the API and its WebSocket, same origin
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in CSP and "*" not in CSP and "data:" not in CSP
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"


def test_every_file_has_a_type_and_a_lower_case_name() -> None:
    for path in STATIC.rglob("*"):
        if path.is_file():
            assert path.suffix in TYPES, path
            assert (
                path.relative_to(STATIC).as_posix() == path.relative_to(STATIC).as_posix().lower()
            )


def _strings(lang: str) -> set[str]:
    source = (STATIC / "i18n.js").read_text(encoding="utf-8")
    block = re.search(rf"\n  {lang}: \{{\n(.*?)\n  \}},", source, re.S)
    assert block is not None, lang
    return set(re.findall(r'^\s+"?([\w.]+)"?:', block.group(1), re.M))


def test_persian_and_english_have_the_same_strings() -> None:
    en, fa = _strings("en"), _strings("fa")
    assert len(en) > 100
    assert en == fa, {"only en": en - fa, "only fa": fa - en}


def test_every_string_the_page_and_scripts_ask_for_exists() -> None:
    known = _strings("en")
    asked = set(re.findall(r'data-i18n(?:-title|-placeholder)?="([\w.]+)"', HTML))
    for path in SCRIPTS:
        asked |= set(re.findall(r'\bt\("([\w.]+)"', path.read_text(encoding="utf-8")))
    assert asked and asked <= known, asked - known
