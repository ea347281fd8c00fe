"""The one exception tree of agent-cache.

    AgentCacheError
    ├── AgentCacheUsageError        bad input from the caller (the message names the offending path)
    │   └── SerializationError      a value that cannot be encoded as canonical JSON
    │       └── UnencodableTextError    text with no UTF-8 form (a lone surrogate): data, not a bug
    ├── ConfigurationError          invalid options or an invalid live config
    │   └── NameCollisionError      the cache name is registered to another kind of cache (also a usage error)
    ├── BackendError                Valkey could not serve the request
    │   ├── BackendUnavailableError connection refused/reset, cluster down
    │   │   └── BackendAuthenticationError  wrong user name or password
    │   ├── BackendTimeoutError     the server did not answer in time
    │   └── ValkeyCommandError      the server answered with an error
    ├── CorruptEntryError           a stored entry could not be decoded
    └── CacheMissError              only_if_cached: the answer is not cached, and the model was not called

Valkey client errors are translated in the backend layer only and re-raised ``from`` the original.
"""

from __future__ import annotations


class AgentCacheError(Exception):
    """Base class of every error raised by agent-cache."""


class AgentCacheUsageError(AgentCacheError, ValueError):
    """The caller passed something the cache cannot accept."""


class SerializationError(AgentCacheUsageError):
    """A value cannot be turned into canonical JSON (the message names the path inside the value)."""


class UnencodableTextError(SerializationError):
    """Text with no UTF-8 form (a lone surrogate) where a key needs it. Such text comes from data (a decoded
    file, a model's output), not from the calling code, so a lookup fails open on it: a miss, as for an outage."""


class ConfigurationError(AgentCacheError):
    """Invalid cache options or an invalid live configuration."""


class NameCollisionError(ConfigurationError, AgentCacheUsageError):
    """The cache name is registered in ``__betterdb:caches`` by another kind of cache. Also an
    :class:`AgentCacheUsageError`, which is what the reference package raises there."""


class BackendError(AgentCacheError):
    """Valkey could not serve a request."""

    def __init__(self, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


class BackendUnavailableError(BackendError):
    """Valkey is unreachable: connection refused or reset, or the cluster is down."""


class BackendAuthenticationError(BackendUnavailableError):
    """Valkey refused the credentials: retrying will not help until they change."""


class BackendTimeoutError(BackendError):
    """Valkey did not answer within the configured timeout."""


class ValkeyCommandError(BackendError):
    """Valkey answered a command with an error (wrong type, no permission, OOM...).

    Also constructible as the reference package's ``ValkeyCommandError(command, cause)``, for code that
    raises it itself (tests, wrappers): the message then names both, and ``__cause__`` is ``cause``.
    """

    def __init__(self, message: str, cause: BaseException | None = None, *, command: str | None = None) -> None:
        if cause is not None:
            command, message = message, f"Valkey command failed: {message} - {cause}"
        super().__init__(message, command=command)
        if cause is not None:
            self.__cause__ = cause


class CorruptEntryError(AgentCacheError):
    """A stored entry exists but cannot be decoded."""


class CacheMissError(AgentCacheError):
    """Under ``CacheControl(only_if_cached=True)`` a wrapper or framework adapter found no cached answer: it raises
    this instead of calling the model. ``key`` is the request's cache key (None when it could not be derived)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
