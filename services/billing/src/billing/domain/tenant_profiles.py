"""Use cases: set and read a tenant's profile, how the emails its customers receive name and brand it.

A tenant is a box maker with customers of its own: its emails come from "<its name> via BoxCostPro", are
answered at its reply-to address, name its support contacts and carry its colour and logo. A tenant
without a profile gets BoxCostPro's: the platform's name, no reply-to, the house colour. The profile in
force when an email is handed to the notifier is the one it is sent with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from billing.domain.api_types import tenant, text
from billing.domain.email_contents import EMAIL_KINDS
from billing.domain.errors import InvalidRequest, NotFound
from billing.domain.providers.fields import locale as known_locale

COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
# BCP 47 as email clients and Babel take it: a language, and a region where it matters (en-IN, hi-IN).
LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
# The portal link may name the customer, as BoxCostPro knows them.
PORTAL_FIELDS = ("{user_id}",)
MAX_NAME = 100
MAX_URL = 2000


# The profile's text fields, as the API, the store and the class name them alike.
TEXT_FIELDS = ("display_name", "support_email", "support_url", "reply_to", "brand_color", "logo_url", "locale",
               "time_zone", "portal_url_template")


@dataclass(frozen=True)
class TenantProfile:
    display_name: str
    support_email: str = ""
    support_url: str = ""
    reply_to: str = ""
    brand_color: str = ""  # #rrggbb
    logo_url: str = ""
    locale: str = ""  # en-IN
    time_zone: str = ""  # Asia/Kolkata
    portal_url_template: str = ""  # https://..., may hold {user_id}
    disabled_emails: tuple[str, ...] = ()  # kinds the tenant's customers are not sent
    updated_at: datetime | None = None
    updated_by: str = ""

    def sends(self, kind: str) -> bool:
        return kind not in self.disabled_emails

    def portal_url(self, user_id: str) -> str:
        """The tenant's billing portal for the customer; empty when it has none, or it needs the customer
        and they are not known."""
        if not self.portal_url_template or ("{user_id}" in self.portal_url_template and not user_id):
            return ""
        return self.portal_url_template.replace("{user_id}", user_id)


def _url(field: str, value: str, *, https: bool = False) -> str:
    if not value:
        return ""
    if len(value) > MAX_URL or any(c.isspace() for c in value):
        raise InvalidRequest(field, f"must be a URL of at most {MAX_URL} characters, without spaces")
    parts = urlsplit(value)
    schemes = ("https",) if https else ("http", "https")
    if parts.scheme not in schemes or not parts.hostname:
        raise InvalidRequest(field, f"must be an absolute {' or '.join(schemes)} URL")
    return value


def _address(field: str, value: str) -> str:
    """An address the notifier takes: checked as it checks it, so that no email of the tenant is refused."""
    value = text(field, value.strip(), required=False)
    if value:
        try:
            validate_email(value, check_deliverability=False)
        except EmailNotValidError:
            raise InvalidRequest(field, "must be an email address") from None
    return value


def checked(profile: TenantProfile) -> TenantProfile:
    """The profile as stored, or InvalidRequest naming the first field that is wrong."""
    name = profile.display_name.strip()
    if not name:
        raise InvalidRequest("profile.display_name", "is required")
    if len(name) > MAX_NAME or any(c in name for c in "\r\n\t<>\"") or not name.isprintable():
        raise InvalidRequest("profile.display_name", f"one line of at most {MAX_NAME} characters, without <, > or \"")
    if profile.brand_color and not COLOUR.match(profile.brand_color):
        raise InvalidRequest("profile.brand_color", "must be #rrggbb")
    if profile.locale and not (LOCALE.match(profile.locale) and known_locale(profile.locale)):
        raise InvalidRequest("profile.locale", "must be a language tag such as en, en-IN or hi-IN")
    if profile.time_zone:
        try:
            ZoneInfo(profile.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidRequest("profile.time_zone", "must be an IANA time zone such as Asia/Kolkata") from None
    template = profile.portal_url_template
    if template:
        leftover = re.sub(r"\{user_id\}", "", template)
        if "{" in leftover or "}" in leftover:
            raise InvalidRequest("profile.portal_url_template", f"may hold only {', '.join(PORTAL_FIELDS)}")
        _url("profile.portal_url_template", template.replace("{user_id}", "u"), https=True)
    unknown = sorted(set(profile.disabled_emails) - set(EMAIL_KINDS))
    if unknown:
        raise InvalidRequest("profile.disabled_emails", f"unknown kind {unknown[0]!r}; kinds: {', '.join(EMAIL_KINDS)}")
    return TenantProfile(
        display_name=name, support_email=_address("profile.support_email", profile.support_email),
        support_url=_url("profile.support_url", profile.support_url),
        reply_to=_address("profile.reply_to", profile.reply_to), brand_color=profile.brand_color.lower(),
        logo_url=_url("profile.logo_url", profile.logo_url, https=True), locale=profile.locale,
        time_zone=profile.time_zone, portal_url_template=template,
        disabled_emails=tuple(sorted(set(profile.disabled_emails))))


class TenantProfilePort(Protocol):
    async def save_profile(self, tenant_id: str, profile: TenantProfile, updated_by: str) -> TenantProfile:
        """Store the tenant's profile in place of any before; the stored row."""

    async def profile(self, tenant_id: str) -> TenantProfile | None: ...

    async def profiles(self, tenant_ids: list[str]) -> dict[str, TenantProfile]:
        """The profiles of those tenants that have one."""


class TenantProfiles:
    def __init__(self, store: TenantProfilePort) -> None:
        self._store = store

    async def set(self, tenant_id: str, profile: TenantProfile, updated_by: str) -> TenantProfile:
        """Replace the tenant's profile whole: a field left empty takes its fallback."""
        return await self._store.save_profile(tenant(tenant_id), checked(profile), updated_by)

    async def get(self, tenant_id: str) -> TenantProfile:
        found = await self._store.profile(tenant(tenant_id))
        if found is None:
            raise NotFound("this tenant has no profile: its emails use BoxCostPro's name and look")
        return found
