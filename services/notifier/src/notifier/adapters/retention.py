"""How long the notifier keeps its email log: weekly partitions, dropped whole past retention (with the
rendered bodies and addresses they hold); idempotency keys deleted row by row past theirs. The upkeep
itself is pgkit.partitions'."""

from __future__ import annotations

from pgkit.partitions import QUEUE_VACUUM, PartitionedTable

# An email still to be sent keeps its week's partition until it is sent or fails.
EMAIL_LOGS = PartitionedTable("notifier", "email_logs", "created_at", keep_while="status IN ('queued', 'retrying')",
                              storage=QUEUE_VACUUM)
TABLES = (EMAIL_LOGS,)
KEYS = (("notifier.email_keys", "created_at"),)
