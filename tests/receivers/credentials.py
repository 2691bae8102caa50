"""The credentials each stand-in receiver accepts, and how to build the stand-ins.

Tests export :data:`SECRET_ENV` as environment variables and reference them from the
connector configs as ``${env:NAME}``, like a real deployment would.
"""

from __future__ import annotations

import base64

from tests.receivers.apis import (
    DatadogLogsApi,
    ElasticsearchBulkApi,
    NewRelicEventApi,
    SplunkHecApi,
    WebhookApi,
)
from tests.receivers.base import Api

DD_API_KEY = "dd0c8e1f6a2b4c7d9e0f1a2b3c4d5e6f"
SPLUNK_TOKEN = "5f3b1c2d-8e7a-4b6c-9d0e-1f2a3b4c5d6e"
NEW_RELIC_KEY = "NRII-licensekey-0123456789abcdef"
NEW_RELIC_ACCOUNT = 3141592
ES_API_KEY = base64.b64encode(b"VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw").decode()
WEBHOOK_AUTH = "Bearer whk_live_7c1e9a2f0b3d4e5f"
WEBHOOK_PATH = "/hooks/video-events"

SECRET_ENV = {
    "TEST_DD_API_KEY": DD_API_KEY,
    "TEST_SPLUNK_TOKEN": SPLUNK_TOKEN,
    "TEST_NEW_RELIC_KEY": NEW_RELIC_KEY,
    "TEST_ES_API_KEY": ES_API_KEY,
    "TEST_WEBHOOK_AUTH": WEBHOOK_AUTH,
}
"""Environment variables the test configs reference, and their values."""


def webhook_connector(url: str, batch: str, *deliver: str, retry: str | None = None) -> str:
    """YAML of an ``http`` connector ``hook`` posting NDJSON to the webhook stand-in at ``url``.

    An item of the ``connectors:`` list: ``batch`` is its ``batch`` mapping (flow style),
    ``deliver`` more ``key: value`` lines of its ``deliver``, ``retry`` its ``retry``
    mapping. The secret is referenced as ``${env:TEST_WEBHOOK_AUTH}`` (:data:`SECRET_ENV`).
    """
    lines = [
        "  - id: hook",
        "    type: http",
        "    deliver:",
        f'      endpoint: "{url}{WEBHOOK_PATH}"',
        "      headers: {Authorization: '${env:TEST_WEBHOOK_AUTH}', X-Source: telemetry}",
        "      body: ndjson",
        f"      batch: {batch}",
        *(f"      {line}" for line in deliver),
    ]
    if retry is not None:
        lines.append(f"    retry: {retry}")
    return "\n".join(lines)


def make_api(kind: str) -> Api:
    """A fresh API stand-in of one kind with the test credentials."""
    if kind == "datadog_logs":
        return DatadogLogsApi(DD_API_KEY)
    if kind == "splunk_hec":
        return SplunkHecApi(SPLUNK_TOKEN, indexes=("main", "video"))
    if kind == "new_relic":
        return NewRelicEventApi(NEW_RELIC_ACCOUNT, NEW_RELIC_KEY)
    if kind == "elasticsearch":
        return ElasticsearchBulkApi(api_key=ES_API_KEY)
    if kind == "http":
        return WebhookApi(
            WEBHOOK_PATH, {"Authorization": WEBHOOK_AUTH, "X-Source": "telemetry"}, "ndjson"
        )
    raise ValueError(f"no receiver for {kind!r}")


API_KINDS = ("http", "datadog_logs", "splunk_hec", "new_relic", "elasticsearch")
"""Every HTTP API with a stand-in receiver."""
