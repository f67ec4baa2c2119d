"""Which locale an email is written in, and the message catalogs that translate it.

English is the templates' own language; each other language has a gettext catalog (`locale/<lang>/
LC_MESSAGES/messages.po`), read when the service starts. A locale whose language has no catalog is written
in English, with money and dates in English as spoken in its region where CLDR has that (ta-IN: en-IN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from babel import Locale, UnknownLocaleError, localedata
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

CATALOGS = Path(__file__).resolve().parent.parent / "locale"
DEFAULT_LOCALE = "en"
DOMAIN = "messages"


def parse(tag: str) -> Locale:
    """A BCP 47 tag (hi-IN) or POSIX name (hi_IN) as Babel's Locale; ValueError when CLDR has no such
    locale."""
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as exc:
        raise ValueError(f"{tag!r} is not a locale: use a language tag such as en, en-IN or hi-IN") from exc


@dataclass
class Catalogs:
    translations_by_language: dict[str, Translations] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path = CATALOGS) -> Catalogs:
        loaded = {}
        for po in sorted(directory.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
            language = po.parent.parent.name
            with po.open("rb") as f:
                catalog = read_po(f, locale=language)
            mo = BytesIO()
            write_mo(mo, catalog)
            mo.seek(0)
            loaded[language] = Translations(mo, domain=DOMAIN)
        return cls(loaded)

    @property
    def languages(self) -> set[str]:
        return {DEFAULT_LOCALE, *self.translations_by_language}

    def locale_for(self, requested: str) -> str:
        """The locale an email asked for in `requested` is written in, as Babel names it."""
        if not requested:
            return DEFAULT_LOCALE
        locale = parse(requested)
        if locale.language in self.languages:
            return str(locale)
        english = f"{DEFAULT_LOCALE}_{locale.territory}" if locale.territory else DEFAULT_LOCALE
        return english if localedata.exists(english) else DEFAULT_LOCALE

    def translations(self, locale: str) -> NullTranslations:
        return self.translations_by_language.get(parse(locale).language) or NullTranslations()


def messages(templates: Path, subjects: list[str]) -> list[str]:
    """Every text of the templates and subjects gettext translates, in order of first use."""
    from jinja2.ext import babel_extract

    sources = [p.read_bytes() for p in sorted(templates.glob("*.*"))] + [s.encode() for s in subjects]
    found: dict[str, None] = {}
    for source in sources:
        for _line, _function, message, _comments in babel_extract(
                BytesIO(source), ("_", "gettext"), [], {"trim_blocks": "true", "lstrip_blocks": "true"}):
            text = message[0] if isinstance(message, tuple) else message  # values follow the text
            if isinstance(text, str):
                found.setdefault(text)
    return list(found)


def update_catalogs(templates: Path, subjects: list[str], directory: Path = CATALOGS) -> dict[str, list[str]]:
    """Add the texts the templates gained to every catalog, untranslated; what each catalog still lacks."""
    from babel.messages.pofile import write_po

    wanted = messages(templates, subjects)
    missing = {}
    for po in sorted(directory.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        with po.open("rb") as f:
            catalog = read_po(f, locale=po.parent.parent.name)
        added = [text for text in wanted if text not in catalog]
        for text in added:
            catalog.add(text, "", flags=("python-format",) if "%(" in text else ())
        if added:
            with po.open("wb") as f:
                write_po(f, catalog, width=120, no_location=True, omit_header=False)
        missing[po.parent.parent.name] = [m.id for m in catalog if m.id and not m.string]
    return missing
