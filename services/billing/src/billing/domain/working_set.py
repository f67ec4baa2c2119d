"""The rows one batch of events reads and writes, found by the ids events name them by."""

from __future__ import annotations

from billing.domain.model import Provider, SubRef, Subscription, Transaction, TxnRef, _REF_KEYS, _named_by

_TXN_KEYS = _REF_KEYS + ("stripe_subscription_id", "razorpay_subscription_id")


def _adoptable_key(ref: TxnRef) -> tuple[str, str] | None:
    """The column and id every row `Transaction.adoptable_by(ref)` accepts holds."""
    if ref.stripe_payment_intent_id and ref.stripe_invoice_id:
        return "stripe_invoice_id", ref.stripe_invoice_id
    if ref.razorpay_order_id and ref.razorpay_payment_id:
        return "razorpay_payment_id", ref.razorpay_payment_id
    return None


class WorkingSet:
    """The rows one batch of events reads and writes, with what changed.

    Rows are found through indexes of the ids events name them by, so a batch costs time in proportion
    to its events (a burst makes batches of hundreds). Where several rows match, the one whose last put
    is the earliest wins.
    """

    def __init__(self) -> None:
        self.changed_transactions: dict[str, Transaction] = {}
        self.changed_subscriptions: dict[str, Subscription] = {}
        self.emails: list = []  # EmailIntent, for the outbox
        self.amendments: list = []  # EmailAmendment, of emails in the outbox
        # Rows found to record a payment another row records too, merged into it: id -> the one kept.
        self.merged_transactions: dict[str, str] = {}
        self.transactions = []
        self.subscriptions = []

    @property
    def transactions(self) -> list[Transaction]:
        return list(self._txns.values())

    @transactions.setter
    def transactions(self, rows: list[Transaction]) -> None:
        self._txns: dict[str, Transaction] = {}
        self._order: dict[str, int] = {}  # when each row was put: the scan order of the rows
        self._keys: dict[tuple[str, str], set[str]] = {}
        self._puts = 0
        for row in rows:
            self._place(row)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    @subscriptions.setter
    def subscriptions(self, rows: list[Subscription]) -> None:
        self._subs: dict[str, Subscription] = {}
        self._sub_ids: dict[tuple[Provider, str], str] = {}
        for row in rows:
            self._place_subscription(row)

    def _place(self, row: Transaction) -> None:
        old = self._txns.pop(row.id, None)
        if old is not None:
            self._unindex(old)
        self._txns[row.id] = row
        self._puts += 1
        self._order[row.id] = self._puts
        for column in _TXN_KEYS:
            if value := getattr(row, column):
                self._keys.setdefault((column, value), set()).add(row.id)

    def _unindex(self, row: Transaction) -> None:
        for column in _TXN_KEYS:
            if value := getattr(row, column):
                self._keys[(column, value)].discard(row.id)

    def _first(self, key: tuple[str, str] | None, accept) -> Transaction | None:
        ids = self._keys.get(key, ()) if key else ()
        found = [self._txns[i] for i in ids if accept(self._txns[i])]
        return min(found, key=lambda t: self._order[t.id]) if found else None

    def find_transaction(self, ref: TxnRef) -> Transaction | None:
        found = self._first(_named_by(ref), lambda t: t.matches(ref))
        if found is None:
            found = self._first(_adoptable_key(ref), lambda t: t.adoptable_by(ref))
        return found

    def find_twin(self, ref: TxnRef, found: Transaction | None) -> Transaction | None:
        """Another row of the payment `found` is, which only `ref` shows to be the same one."""
        if found is None:
            return None
        return self._first(_adoptable_key(ref), lambda t: t.id != found.id and t.adoptable_by(ref))

    def payments_of(self, ref: SubRef) -> list[Transaction]:
        """The payments of a subscription, in the order they were put."""
        column = "stripe_subscription_id" if ref.provider is Provider.STRIPE else "razorpay_subscription_id"
        rows = [self._txns[i] for i in self._keys.get((column, ref.subscription_id), ())]
        return sorted((t for t in rows if t.provider is ref.provider), key=lambda t: self._order[t.id])

    def merge_transactions(self, keep: Transaction, gone: Transaction, merged: Transaction) -> None:
        if (removed := self._txns.pop(gone.id, None)) is not None:
            self._unindex(removed)
        self.changed_transactions.pop(gone.id, None)
        self.merged_transactions[gone.id] = keep.id
        for old, kept in self.merged_transactions.items():
            if kept == gone.id:
                self.merged_transactions[old] = keep.id
        self.put_transaction(merged)

    def find_subscription(self, ref: SubRef) -> Subscription | None:
        row_id = self._sub_ids.get((ref.provider, ref.subscription_id))
        return self._subs[row_id] if row_id is not None else None

    def put_transaction(self, row: Transaction) -> None:
        self._place(row)
        self.changed_transactions[row.id] = row

    def _place_subscription(self, row: Subscription) -> None:
        self._subs.pop(row.id, None)
        self._subs[row.id] = row
        self._sub_ids.setdefault((row.provider, row.provider_id), row.id)

    def put_subscription(self, row: Subscription) -> None:
        self._place_subscription(row)
        self.changed_subscriptions[row.id] = row

    def snapshot(self) -> tuple:
        """What `restore` needs to undo the changes made after it: rows are immutable, so copies of the
        maps that hold them."""
        return (dict(self._txns), dict(self._subs), dict(self.changed_transactions),
                dict(self.changed_subscriptions), len(self.emails), len(self.amendments),
                dict(self.merged_transactions))

    def restore(self, snapshot: tuple) -> None:
        (txns, subs, self.changed_transactions, self.changed_subscriptions, emails, amendments,
         self.merged_transactions) = snapshot
        self.transactions = list(txns.values())
        self.subscriptions = list(subs.values())
        del self.emails[emails:]
        del self.amendments[amendments:]
