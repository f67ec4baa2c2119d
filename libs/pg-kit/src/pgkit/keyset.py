"""Page tokens for keyset pagination, newest first by (timestamp, id): a page resumes strictly after the
last row seen, so rows inserted meanwhile never shift or repeat a page."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any


def encode_token(at: datetime, row_id: Any) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode()


def decode_token(token: str | None) -> tuple[datetime | None, uuid.UUID | None]:
    """(None, None) for the first page; ValueError for a token this module did not make."""
    if not token:
        return None, None
    at, _, row_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
    return datetime.fromisoformat(at), uuid.UUID(row_id)
