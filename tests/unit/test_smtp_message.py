"""The message put on the wire parses back, in any mail client's parser, to exactly what was rendered."""

from email import message_from_bytes, policy

from hypothesis import given, settings
from hypothesis import strategies as st
from notifier.adapters.smtp import build_message
from notifier.domain.ports import OutgoingMessage

# What validation lets through to a header: any printable text, no line breaks or other controls.
# (Leading and trailing blanks are not significant in a header.)
header_text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=120).filter(
    lambda s: s == s.strip())
body_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=600)


def _message(**overrides) -> OutgoingMessage:
    fields = dict(message_id="<abc@boxcostpro.com>", to_email="asha@example.com", to_name="Asha Rao",
                  sender_name="Shree Packaging", subject="Payment received: $49.99",
                  html="<p>We received your payment</p>", text="Hi Asha Rao,\n")
    return OutgoingMessage(**{**fields, **overrides})


def _parse(raw: bytes):
    return message_from_bytes(raw, policy=policy.default)


def test_message_has_standard_headers_and_both_parts_in_order():
    raw = build_message(_message(), "noreply@boxcostpro.com")
    parsed = _parse(raw)
    assert parsed["From"] == "Shree Packaging via BoxCostPro <noreply@boxcostpro.com>"
    assert parsed["To"] == "Asha Rao <asha@example.com>"
    assert parsed["Subject"] == "Payment received: $49.99"
    assert parsed["Message-ID"] == "<abc@boxcostpro.com>"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Date"].datetime is not None
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed.get_body(("plain",)).get_content() == "Hi Asha Rao,\n"
    assert parsed.get_body(("html",)).get_content() == "<p>We received your payment</p>"


def test_lines_are_crlf_terminated_and_short():
    subject = "Your Pro monthly subscription with Shree Packaging is active " * 4
    raw = build_message(_message(subject=subject.strip(), html="<p>" + "x" * 5000 + "</p>"),
                        "noreply@boxcostpro.com")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert _parse(raw)["Subject"] == subject.strip()


def test_names_that_need_quoting_stay_one_address():
    parsed = _parse(build_message(_message(to_name='Rao, Asha "AR"'), "noreply@boxcostpro.com"))
    [address] = parsed["To"].addresses
    assert (address.display_name, address.addr_spec) == ('Rao, Asha "AR"', "asha@example.com")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(subject=header_text, to_name=header_text, tenant=header_text, text=body_text, html=body_text)
def test_any_text_round_trips(subject, to_name, tenant, text, html):
    message = _message(subject=subject, to_name=to_name, sender_name=tenant, text=text, html=html)
    raw = build_message(message, "noreply@boxcostpro.com")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = _parse(raw)
    assert parsed["Subject"] == subject
    [to] = parsed["To"].addresses
    # A display name's runs of blanks read as one, in every mail client.
    assert (to.display_name.split(), to.addr_spec) == (to_name.split(), "asha@example.com")
    assert parsed["From"].addresses[0].addr_spec == "noreply@boxcostpro.com"
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == text.replace("\r\n", "\n")
    assert parsed.get_body(("html",)).get_content() == html
