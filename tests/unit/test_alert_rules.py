"""The alerting rules in deploy/monitoring: each one parses as PromQL, reads only metrics and labels the
services export (an alert on a renamed metric would never fire, silently), and says what to do."""

from __future__ import annotations

from pathlib import Path

import grpc
import promql_parser as promql
import pytest
import yaml
from billing.api import metrics as billing_metrics
from billing.domain.events import Attention, Outcome
from gateway.domain.receive import Provider
from gateway.web import app as gateway_app
from gateway.web import errors as gateway_errors
from notifier.api import metrics as notifier_metrics
from notifier.domain.model import EmailStatus
from servicekit import metrics as grpc_metrics

RULES = Path(__file__).parents[2] / "deploy" / "monitoring" / "alerts.yaml"

# What Prometheus adds to every series it scrapes from a pod.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container"}

_METRICS = [gateway_app.WEBHOOKS, gateway_app.WEBHOOK_SECONDS, billing_metrics.EVENTS, billing_metrics.BATCH_SIZE,
            billing_metrics.OUTBOX_BACKLOG, billing_metrics.OUTBOX_AGE, billing_metrics.FAILED_EVENTS,
            billing_metrics.DEAD_LETTER, billing_metrics.OUTBOX_REFUSED, billing_metrics.ATTENTION,
            billing_metrics.UNATTRIBUTED, notifier_metrics.EMAILS, notifier_metrics.SMTP_SECONDS,
            grpc_metrics.RPC_HANDLED, grpc_metrics.RPC_SECONDS]


def _exported() -> dict[str, set[str]]:
    """Each series name the services expose, with its label names."""
    series: dict[str, set[str]] = {}
    for metric in _METRICS:
        labels = set(metric._labelnames)
        [family] = metric.describe()
        names = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                 "gauge": [""]}[family.type]
        for suffix in names:
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


EXPORTED = _exported()

# The values a metric's label can take, where the code names them all.
_PROVIDERS = {p.value for p in Provider}
KNOWN_VALUES = {
    ("webhook_requests_total", "provider"): _PROVIDERS,
    ("webhook_requests_total", "result"): {o.value for o in Outcome} | {r.code for _, r in gateway_errors.REFUSALS},
    ("webhook_request_seconds_bucket", "provider"): _PROVIDERS,
    ("billing_webhook_events_total", "provider"): _PROVIDERS,
    ("billing_webhook_events_total", "outcome"): {o.value for o in Outcome},
    ("billing_finance_attention_total", "provider"): _PROVIDERS,
    ("billing_finance_attention_total", "reason"): {a.value for a in Attention},
    ("notifier_emails_total", "status"): {s.value for s in EmailStatus},
    ("notifier_smtp_send_seconds_bucket", "result"): set(notifier_metrics.SMTP_RESULTS),
    ("grpc_server_handled_total", "grpc_code"): {c.name for c in grpc.StatusCode},
}

def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _selectors(expr) -> list:
    found = []
    promql.walk(expr, lambda node: found.append(node) if isinstance(node, promql.VectorSelector) else None)
    return found


def _output_labels(expr) -> set[str] | None:
    """The labels an alert's series keep (None: all of the selected series'), for the shapes used here."""
    if isinstance(expr, promql.BinaryExpr):
        return _output_labels(expr.lhs)
    if isinstance(expr, promql.AggregateExpr):
        if expr.modifier is None:
            return set()
        assert expr.modifier.type is promql.AggModifierType.By, "use `by`, so the labels an alert keeps are named"
        return set(expr.modifier.labels)
    if isinstance(expr, promql.Call) and expr.func.name == "histogram_quantile":
        return _output_labels(expr.args[1]) - {"le"}
    raise AssertionError(f"extend _output_labels for {type(expr).__name__}")


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_an_alert_reads_only_exported_metrics_and_labels(rule):
    expr = promql.parse(rule["expr"])
    selectors = _selectors(expr)
    assert selectors
    for selector in selectors:
        assert selector.name in EXPORTED, f"{selector.name} is not a metric the services export"
        for matcher in selector.matchers.matchers:
            assert matcher.name in EXPORTED[selector.name] | TARGET_LABELS, f"{selector.name} has no {matcher.name}"
            known = KNOWN_VALUES.get((selector.name, matcher.name))
            if known is not None:
                values = set(matcher.value.split("|")) if matcher.op is promql.MatchOp.Re else {matcher.value}
                assert values <= known, f"{matcher.name} never takes {values - known}"
    kept = _output_labels(expr)
    for text in rule["annotations"].values():
        for label in (part.split("}}")[0].strip() for part in text.split("$labels.")[1:]):
            assert kept is None or label in kept, f"the alert's series have no {label!r} label"


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_an_alert_says_how_bad_it_is_and_what_to_do(rule):
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 40
    if "for" in rule:
        assert promql.parse_duration(rule["for"]).total_seconds() > 0


def test_alert_names_are_unique_and_the_critical_ones_cover_what_loses_money_or_customers():
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    paged = {rule["alert"] for rule in rules if rule["labels"]["severity"] == "critical"}
    assert paged == {"WebhooksAnswered503BillingUnavailable", "WebhookSignaturesFailing",
                     "WebhookEventsDeadLettered", "CustomerEmailsNotLeavingBilling"}
