"""MLflow webhook verification, on two deliveries captured on the wire from a real MLflow server."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from webhook_app.signature import (
    WebhookConfigurationError,
    WebhookVerificationError,
    parse_event,
    sign,
    verify,
)

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "mlflow_webhook_deliveries.json").read_text())
SECRET = FIXTURE["secret"]
DELIVERIES = FIXTURE["deliveries"]


def delivery(index=0):
    """(body bytes, a copy of the headers, the delivery's own timestamp as the clock)."""
    d = DELIVERIES[index]
    headers = dict(d["headers"])
    stamp = next(v for k, v in headers.items() if k.lower() == "x-mlflow-timestamp")
    return d["raw_body"].encode(), headers, int(stamp)


def header_key(headers, name):
    return next(k for k in headers if k.lower() == name)


def failure(body, headers, secrets=(SECRET,), **kwargs) -> str:
    with pytest.raises(WebhookVerificationError) as e:
        verify(body, headers, list(secrets), **kwargs)
    message = str(e.value)
    assert SECRET not in message
    for secret in secrets:
        assert secret not in message
    return message


def test_the_fixture_headers_differ_in_case_between_deliveries():
    assert "X-Mlflow-Signature" in DELIVERIES[0]["headers"]
    assert "X-MLflow-Signature" in DELIVERIES[1]["headers"]


@pytest.mark.parametrize("index", [0, 1])
def test_both_captured_deliveries_verify(index):
    body, headers, now = delivery(index)
    result = verify(body, headers, [SECRET], now=now)
    assert result.delivery_id == headers[header_key(headers, "x-mlflow-delivery-id")]
    assert result.timestamp == now
    assert result.body == body
    event = parse_event(result.body)
    assert (event["entity"], event["action"], event["data"]["name"]) == ("model_version", "created", "demo-model-b")


def test_sign_reproduces_mlflows_signature():
    body, headers, now = delivery(1)
    delivery_id = headers[header_key(headers, "x-mlflow-delivery-id")]
    assert sign(SECRET, delivery_id, now, body) == headers["X-MLflow-Signature"]


@pytest.mark.parametrize("index", [0, 1])
def test_a_one_byte_change_to_the_body_fails(index):
    body, headers, now = delivery(index)
    tampered = body.replace(b'"version": "', b'"version": "9', 1)
    assert len(tampered) == len(body) + 1
    assert failure(tampered, headers, now=now) == "signature mismatch"
    flipped = bytes([body[0] ^ 1]) + body[1:]
    assert failure(flipped, headers, now=now) == "signature mismatch"


def test_a_changed_delivery_id_fails():
    body, headers, now = delivery(0)
    headers["X-Mlflow-Delivery-Id"] = "00000000-0000-4000-8000-000000000000"
    assert failure(body, headers, now=now) == "signature mismatch"


def test_the_wrong_secret_fails():
    body, headers, now = delivery(0)
    assert failure(body, headers, secrets=["not-the-secret"], now=now) == "signature mismatch"


def test_rotation_accepts_the_right_secret_in_second_place():
    body, headers, now = delivery(1)
    assert verify(body, headers, ["the-new-secret", SECRET], now=now).body == body
    assert verify(body, headers, ("the-new-secret", SECRET), now=now).body == body


@pytest.mark.parametrize("name", ["x-mlflow-delivery-id", "x-mlflow-timestamp", "x-mlflow-signature"])
def test_each_missing_header_fails_and_is_named(name):
    body, headers, now = delivery(0)
    del headers[header_key(headers, name)]
    assert failure(body, headers, now=now) == f"missing {name} header"


def test_headers_are_matched_whatever_their_case():
    body, headers, now = delivery(0)
    lower = {k.lower(): v for k, v in headers.items()}
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify(body, lower, [SECRET], now=now).body == body
    assert verify(body, upper, [SECRET], now=now).body == body


@pytest.mark.parametrize("value", ["v1,not*base64!", "v1,J6De+C8TPceLMKeJ4kf6hqN4kqT/aFlzHxU4aYEFc7I", "v1,====", ""])
def test_malformed_base64_fails(value):
    body, headers, now = delivery(0)
    headers["X-Mlflow-Signature"] = value  # the second one is the real digest without its padding
    assert failure(body, headers, now=now) == "malformed signature"


@pytest.mark.parametrize("value", ["v1,", "v1,YWJj"])
def test_well_formed_base64_of_the_wrong_digest_fails(value):
    body, headers, now = delivery(0)
    headers["X-Mlflow-Signature"] = value
    assert failure(body, headers, now=now) == "signature mismatch"


def test_a_non_v1_scheme_fails_even_with_the_right_digest():
    body, headers, now = delivery(0)
    digest = headers["X-Mlflow-Signature"].split(",", 1)[1]
    for scheme in ("v2", "V1", "v1a", ""):
        headers["X-Mlflow-Signature"] = f"{scheme},{digest}"
        assert failure(body, headers, now=now) == "malformed signature"
    headers["X-Mlflow-Signature"] = digest  # no scheme at all
    assert failure(body, headers, now=now) == "malformed signature"


def test_one_valid_signature_among_several_is_enough():
    body, headers, now = delivery(0)
    good = headers["X-Mlflow-Signature"]
    wrong = "v1," + base64.b64encode(b"\x00" * 32).decode()
    headers["X-Mlflow-Signature"] = f"v2,abc {wrong} v1,@@@ {good}"
    assert verify(body, headers, [SECRET], now=now).body == body
    headers["X-Mlflow-Signature"] = f"{wrong} v2,{good.split(',', 1)[1]}"
    assert failure(body, headers, now=now) == "signature mismatch"


@pytest.mark.parametrize("offset", [301, -301, 10_000])
def test_a_timestamp_more_than_300_s_off_either_way_fails(offset):
    body, headers, now = delivery(0)
    assert failure(body, headers, now=now + offset) == "timestamp outside the allowed window"


@pytest.mark.parametrize("offset", [299, -299, 300, 0])
def test_a_timestamp_within_300_s_passes(offset):
    body, headers, now = delivery(0)
    assert verify(body, headers, [SECRET], now=now + offset).delivery_id == "c499e225-e58c-490b-b52e-248fdea0b822"


def test_the_tolerance_is_injectable():
    body, headers, now = delivery(0)
    assert verify(body, headers, [SECRET], now=now + 1000, tolerance=1000).body == body
    assert failure(body, headers, now=now + 11, tolerance=10) == "timestamp outside the allowed window"


def test_without_a_clock_the_real_time_makes_the_old_captures_stale():
    body, headers, _ = delivery(0)
    assert failure(body, headers) == "timestamp outside the allowed window"


@pytest.mark.parametrize("value", ["", "abc", "1795393935.5", "1e9", "0x6b03"])
def test_a_non_integer_timestamp_fails(value):
    body, headers, now = delivery(0)
    headers["X-Mlflow-Timestamp"] = value
    assert failure(body, headers, now=now) == "malformed timestamp"


@pytest.mark.parametrize("value", ["", "   ", "x" * 129])
def test_a_malformed_delivery_id_fails(value):
    body, headers, now = delivery(0)
    headers["X-Mlflow-Delivery-Id"] = value
    assert failure(body, headers, now=now) == "malformed delivery id"


@pytest.mark.parametrize("secrets", [[], ()])
def test_no_secret_is_a_configuration_error_not_a_verification_error(secrets):
    body, headers, now = delivery(0)
    with pytest.raises(WebhookConfigurationError, match="no webhook secret is configured"):
        verify(body, headers, secrets, now=now)
    assert not issubclass(WebhookConfigurationError, WebhookVerificationError)


def test_the_secret_reaches_no_error_message():
    body, headers, now = delivery(0)
    cases = [
        (b"x" + body, headers),
        (body, {**headers, "X-Mlflow-Signature": "v1,%%%"}),
        (body, {**headers, "X-Mlflow-Timestamp": SECRET}),
        (body, {**headers, "X-Mlflow-Delivery-Id": SECRET * 20}),
        (body, {k: v for k, v in headers.items() if k != "X-Mlflow-Signature"}),
    ]
    for b, h in cases:
        for clock in (now, now + 1000):
            failure(b, h, secrets=[SECRET, "second-" + SECRET], now=clock)


# -- parse_event ---------------------------------------------------------------------------------


def test_parse_event_returns_the_object():
    body, _, _ = delivery(1)
    event = parse_event(body)
    assert event["data"]["version"] == "6"
    assert event["data"]["description"] == "cache-probe-0"


@pytest.mark.parametrize("body", [b"", b"not json", b'{"entity": ', b"\xff\xfe\xfd", b'{"entity": "\xff"}'])
def test_a_body_that_is_not_utf8_json_is_a_value_error(body):
    with pytest.raises(ValueError, match="body is not JSON"):
        parse_event(body)


@pytest.mark.parametrize("body", [b"[]", b'[{"entity": "model_version"}]', b'"text"', b"42", b"null"])
def test_a_body_that_is_not_an_object_is_a_value_error(body):
    with pytest.raises(ValueError, match="body must be a JSON object"):
        parse_event(body)


GOOD = {"entity": "model_version", "action": "created", "data": {"name": "m", "version": "1"}}


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("entity", None, "'entity' must be a string"),
        ("entity", 1, "'entity' must be a string"),
        ("action", ["created"], "'action' must be a string"),
        ("action", None, "'action' must be a string"),
        ("data", None, "'data' must be an object"),
        ("data", "m", "'data' must be an object"),
        ("data", [], "'data' must be an object"),
    ],
)
def test_missing_or_wrong_typed_fields_are_named(key, value, message):
    event = dict(GOOD)
    if value is None:
        del event[key]
    else:
        event[key] = value
    with pytest.raises(ValueError) as e:
        parse_event(json.dumps(event).encode())
    assert str(e.value) == message
