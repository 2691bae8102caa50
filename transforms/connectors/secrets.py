"""Secrets by reference: the job graph carries where a secret is, never its value.

A config names each secret by reference, and the reference is what the parsed config,
every DoFn and therefore the staged job graph hold; the value is read where it is used,
in a worker's ``DoFn.setup`` (a sink opening its client, a filter compiling its hash key)::

    api_key: ${env:DD_API_KEY}                                          # local, Flink
    api_key: ${gcp-secret:projects/P/secrets/dd-api-key/versions/latest}  # Dataflow
    api_key: ${aws-secret:prod/datadog-api-key}                         # AWS Secrets Manager

:class:`SecretRef` is a :class:`pydantic.SecretStr` whose stored text is the reference:
it prints as ``**********``, pickles as the reference only, and compares by reference;
:meth:`SecretRef.get_secret_value` resolves it (once per process for the managers).

Why on the workers: a graph is pickled and, on Dataflow, staged to GCS and kept with the
job, readable by anyone with access to either; and Dataflow workers do not inherit the
launcher's environment, so ``${env:...}`` only works where the workers share it (a
local run, Flink with ``LOOPBACK`` or a worker environment that sets it).

The dead-letter and retry-record writers redact every secret of the config: they hold a
:class:`ConfigSecrets` (the config, references only) and read its values
(:func:`config_secrets`) in ``setup``, on the worker, like the sinks.

Endpoints for stand-ins and private endpoints: Google Secret Manager is read over its
REST API at ``SECRET_MANAGER_ENDPOINT`` when set (with anonymous credentials when it is
``http://``), else at Google's with Application Default Credentials; AWS Secrets
Manager through boto3's own configuration (``AWS_ENDPOINT_URL_SECRETSMANAGER`` or
``AWS_ENDPOINT_URL``, region, credentials).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from pydantic import BaseModel, SecretStr

from transforms.rules import redact

REFERENCE = re.compile(r"^\$\{(env|gcp-secret|aws-secret):([^}\s]+)\}$")
"""A whole-string secret reference: group 1 the source, group 2 the name."""

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GCP_NAME = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")

_CACHE: dict[str, str] = {}
_LOCK = threading.Lock()


class SecretError(Exception):
    """A secret reference that cannot be resolved here (the message never holds a value)."""


def check_reference(text: str) -> str | None:
    """Why ``text`` is not a usable reference, or None if it is one.

    >>> check_reference("${env:DD_API_KEY}") is None
    True
    """
    match = REFERENCE.match(text)
    if match is None:
        return (
            f"{text!r} is not a valid secret reference. Fix: write exactly ${{env:NAME}}, "
            "${gcp-secret:projects/P/secrets/S/versions/V} or ${aws-secret:NAME_OR_ARN}"
        )
    kind, name = match.groups()
    if kind == "env" and not ENV_NAME.match(name):
        return f"{text!r}: {name!r} is not an environment variable name"
    if kind == "gcp-secret" and not GCP_NAME.match(name):
        return f"{text!r}: a Secret Manager version is projects/P/secrets/S/versions/V"
    return None


class SecretRef(SecretStr):
    """A secret known by its reference (``${env:NAME}`` ...); its value is read on use."""

    def __init__(self, reference: str):
        problem = check_reference(reference)
        if problem is not None:
            raise ValueError(problem)
        super().__init__(reference)

    @property
    def reference(self) -> str:
        """The reference text, e.g. ``${env:DD_API_KEY}`` (not a secret)."""
        return str(self._secret_value)

    @property
    def source(self) -> str:
        """``env``, ``gcp-secret`` or ``aws-secret``."""
        return self.reference[2:].split(":", 1)[0]

    def get_secret_value(self) -> str:
        """The secret's value, read from its source (raises :class:`SecretError`)."""
        return resolve(self.reference)

    def peek(self) -> str | None:
        """The value if it can be read without a network call (``env`` only), else None."""
        if self.source != "env":
            return None
        return os.environ.get(self.reference[6:-1])

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretRef, (self.reference,))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SecretRef) and other.reference == self.reference

    def __hash__(self) -> int:
        return hash(self.reference)


def resolve(reference: str) -> str:
    """Read a secret by reference; secret managers are read once per process.

    Raises:
        SecretError: naming the reference and the cause, never a value.
    """
    match = REFERENCE.match(reference)
    if match is None:
        raise SecretError(f"{reference!r} is not a secret reference")
    kind, name = match.groups()
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise SecretError(
                f"environment variable {name} is not set on this worker. Fix: export it "
                "where the workers run, or use ${gcp-secret:...} / ${aws-secret:...}"
            )
        return value
    cached = _CACHE.get(reference)
    if cached is not None:
        return cached
    with _LOCK:
        cached = _CACHE.get(reference)
        if cached is None:
            try:
                cached = _read_gcp(name) if kind == "gcp-secret" else _read_aws(name)
            except SecretError:
                raise
            except Exception as exc:
                raise SecretError(f"cannot read {reference}: {type(exc).__name__}: {exc}") from None
            _CACHE[reference] = cached
    return cached


def _read_gcp(name: str) -> str:
    import base64

    import google.auth
    import requests
    from google.auth.credentials import AnonymousCredentials
    from google.auth.transport.requests import AuthorizedSession

    endpoint = os.environ.get("SECRET_MANAGER_ENDPOINT", "https://secretmanager.googleapis.com")
    if endpoint.startswith("http://"):
        session: Any = AuthorizedSession(AnonymousCredentials())
    else:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        session = AuthorizedSession(credentials)
    try:
        reply = session.get(f"{endpoint.rstrip('/')}/v1/{name}:access", timeout=30)
    except requests.RequestException as exc:
        raise SecretError(f"cannot reach Secret Manager for {name}: {type(exc).__name__}") from None
    if reply.status_code != 200:
        raise SecretError(f"Secret Manager answered {reply.status_code} for {name}")
    data = reply.json().get("payload", {}).get("data")
    if not isinstance(data, str):
        raise SecretError(f"Secret Manager gave no payload for {name}")
    return base64.b64decode(data).decode("utf-8")


def _read_aws(name: str) -> str:
    import boto3

    client = boto3.client("secretsmanager")
    reply = client.get_secret_value(SecretId=name)
    value = reply.get("SecretString")
    if not isinstance(value, str):
        raise SecretError(f"AWS secret {name} has no SecretString")
    return value


def plain(value: Any) -> Any:
    """``value`` with a :class:`SecretRef` (or one directly in a list) resolved.

    For config fields that are not secrets (an endpoint given as ``${env:URL}``): they
    are resolved when the config is read, as any other value. Mappings are left alone:
    they are sections validated by their own model, which resolves its own fields and
    keeps its secrets as references.
    """
    if isinstance(value, SecretRef):
        return value.get_secret_value()
    if isinstance(value, list):
        return [v.get_secret_value() if isinstance(v, SecretRef) else v for v in value]
    return value


def config_secrets(config: Any) -> tuple[str, ...]:
    """The secret values of a validated config, for the dead-letter and retry-record writers.

    Every ``SecretStr`` field (the ``${env:NAME}`` secrets: API keys, headers, the hash
    key), each connector's typed ``deliver`` section included, and what each connector's
    sink declares secret (:meth:`~transforms.connectors.base.Sink.secret_values`, e.g. the
    secret parts of an endpoint); values shorter than 4 characters are left out
    (:func:`transforms.rules.redact.secret_values`).
    """
    from transforms.connectors import make_sink

    found: list[Any] = []
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, SecretStr):
            found.append(node)
        elif isinstance(node, BaseModel):
            stack.extend(getattr(node, name) for name in type(node).model_fields)
            if isinstance(getattr(type(node), "deliver_config", None), cached_property):
                deliver = node.deliver_config  # type: ignore[attr-defined]
                stack.append(deliver)
                try:  # a sink is built, not opened: no client, no connection
                    sink = make_sink(node.id, node.type, deliver)  # type: ignore[attr-defined]
                    found.extend(getattr(sink, "secret_values", tuple)())
                except Exception:  # its SecretStr fields above are redacted all the same
                    pass
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set | frozenset):
            stack.extend(node)
    return redact.secret_values(*found)


class ConfigSecrets:
    """Where a config's secrets are, for the writers: values are read on each worker.

    The writers' DoFns hold this (the config, whose secrets are :class:`SecretRef`
    references) and call :meth:`values` in ``setup``, so no secret value is ever part of
    the job graph.
    """

    def __init__(self, config: Any):
        self.config = config

    def values(self) -> tuple[str, ...]:
        """The secret values (:func:`config_secrets`)."""
        return config_secrets(self.config)


Secrets = ConfigSecrets | Sequence[str]
"""What the writers take: a :class:`ConfigSecrets`, or values (tests)."""


def secret_values(secrets: Secrets) -> tuple[str, ...]:
    """The values of ``secrets`` (read now, for a :class:`ConfigSecrets`)."""
    return secrets.values() if isinstance(secrets, ConfigSecrets) else tuple(secrets)
