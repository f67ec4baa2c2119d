"""How long billing keeps what it stores: received events and outbox emails in weekly partitions, dropped
whole past retention; event ids, Razorpay body digests and email keys deleted row by row past theirs.
Transactions and subscriptions are never dropped. The upkeep itself is pgkit.partitions'."""

from __future__ import annotations

from pgkit.partitions import QUEUE_VACUUM, PartitionedTable

EVENTS = PartitionedTable("billing", "webhook_events", "received_at")
# An email not yet handed to the notifier keeps its week's partition until it is.
OUTBOX = PartitionedTable("billing", "email_outbox", "created_at", keep_while="status = 'pending'",
                          storage=QUEUE_VACUUM)
TABLES = (EVENTS, OUTBOX)
KEYS = (("billing.event_ids", "received_at"), ("billing.razorpay_bodies", "stored_at"),
        ("billing.email_keys", "created_at"))
