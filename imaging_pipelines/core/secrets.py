"""Credentials in filesystem options: only as references to environment variables, never as values.

A deployment file's ``storage.storage_options`` (and the storage resource's config built from it) ends up in
every run's configuration, in the instance's run snapshots and in the webserver's GraphQL answers. A secret
written there would be served to anyone who can read the UI. So an option whose name says it is a credential
(``key``, ``secret``, ``token``, ``password``, ``aws_secret_access_key``, ...; nested mappings such as
``client_kwargs`` included) must be an environment reference ``{env: VARIABLE}``; the value is read from the
environment of the process that opens the store, at that moment, and is never stored. Plain credentials are
refused with the field named. Better still, leave credentials out and let the filesystem library read its usual
environment (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

ENV_REF = "env"
_SECRET_NAME = re.compile(r"(^key$|secret|token|passw|credential|access_key|account_key|connection_string|"
                          r"private|auth|signature)", re.IGNORECASE)


class SecretReferenceError(ValueError):
    """An ``{env: VARIABLE}`` reference whose variable is not set."""


def is_secret_name(name: str) -> bool:
    """Whether an option named ``name`` holds a credential (and so may only be an ``{env: ...}`` reference)."""
    return bool(_SECRET_NAME.search(str(name)))


def is_env_ref(value: Any) -> bool:
    """``{env: NAME}``: a reference to the environment variable NAME."""
    return isinstance(value, Mapping) and set(value) == {ENV_REF} and isinstance(value[ENV_REF], str)


def plain_secret_fields(options: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the options in ``options`` (nested mappings included) that hold a credential as a
    plain value rather than an ``{env: NAME}`` reference."""
    found = []
    for name, value in options.items():
        field = f"{prefix}{name}"
        if is_env_ref(value):
            continue
        if isinstance(value, Mapping):
            found += plain_secret_fields(value, f"{field}.")
        elif is_secret_name(name) and value not in (None, "", False):
            found.append(field)
    return found


def resolve_env_refs(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every ``{env: NAME}`` replaced by the value of NAME in this process's environment
    (nested mappings included). Raises :class:`SecretReferenceError` naming a variable that is not set."""
    resolved: dict[str, Any] = {}
    for name, value in options.items():
        if is_env_ref(value):
            variable = value[ENV_REF]
            if variable not in os.environ:
                raise SecretReferenceError(f"storage option {name!r} refers to the environment variable "
                                           f"{variable}, which is not set in this process")
            resolved[name] = os.environ[variable]
        elif isinstance(value, Mapping):
            resolved[name] = resolve_env_refs(value)
        else:
            resolved[name] = value
    return resolved
