"""A ``package.function`` for ``examples/languages/delivery.yaml``: fan-out, drop and failure.

Referenced from the repository root as ``examples.languages.lang_functions:error_records``
(the job is launched there, so ``examples`` imports as a package; a real team ships its
function in its own installable package, see ``examples/packaging_plugin``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["error_records"]


def error_records(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """One record per error code of an ``error`` event; every other event is dropped.

    ``metadata.error.codes`` (a list) gives one record per code, ``metadata.error.code``
    one record; an error event with neither raises, which the job turns into a
    ``package_function_failed`` dead letter of that event alone.

    >>> error_records({"event_id": "e1", "event": {"type": "error"},
    ...                "metadata": {"error": {"codes": [4001, 5002]}}})
    [{'event_id': 'e1', 'error_code': 4001}, {'event_id': 'e1', 'error_code': 5002}]
    >>> error_records({"event_id": "e2", "event": {"type": "heartbeat"}}) is None
    True
    """
    if (record.get("event") or {}).get("type") != "error":
        return None
    error = (record.get("metadata") or {}).get("error") or {}
    codes = error.get("codes")
    if not isinstance(codes, list):
        if "code" not in error:
            msg = f"error event {record.get('event_id')!r} carries no error code"
            raise ValueError(msg)
        codes = [error["code"]]
    return [{"event_id": record.get("event_id"), "error_code": code} for code in codes]
