"""Who may call: API keys mapped to tenants, their rights and limits; protocol-neutral.

With no keys configured nobody is authenticated and everything is allowed (the caller's tenant
is None everywhere). With keys (``--api-keys-file`` / ``--api-keys``), every call but the
probes carries a key (gRPC metadata ``authorization: Bearer <key>`` or ``x-api-key``; HTTP the
``Authorization: Bearer <key>`` header): none, or one no tenant has, is UNAUTHENTICATED; a call
whose right the tenant lacks is PERMISSION_DENIED. Only sha256 digests of keys are stored, and a
presented key's digest is compared with every stored one in constant time.

The keys document (JSON, or TOML when the file name ends in ``.toml``)::

    {"keys": [{"tenant": "acme",
               "key_sha256": "<64 hex digits>" (or a list of them, to rotate keys),
               "rights": ["infer", "tune", "manage"],
               "limits": {"max_inflight": 8, "max_streams": 2, "max_new_tokens": 256},
               "adapters": "private"}]}

``adapters``: who is served the adapters this tenant's tuning jobs publish, ``private`` (the
tenant alone, the default) or ``public`` (every tenant). A limit left out is not limited.

Each transport authenticates in one place (``gateway/frontends/{http,grpc}/access_gate.py``),
which classifies its routes and calls ``Admission``; the tenant then rides with the request:
``RequestContext.tenant`` for the core, ``current_tenant()`` for the tuning service.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import InvalidInput, Overloaded, PermissionDenied, Unauthenticated, Unavailable
from gateway.ops.request_log import note_tenant
from gateway.ops.shutdown import Drain


class Right(enum.Enum):
    INFER = "infer"  # the task APIs, model metadata and info
    TUNE = "tune"  # tuning jobs and their training files
    MANAGE = "manage"  # loading, deploying and configuring models; adapter versions


class Probe(enum.Enum):
    """Routes open without a key. Liveness answers while draining; readiness is refused then."""

    LIVENESS = "liveness"
    READINESS = "readiness"


Route = Right | Probe  # what a transport's route table says a call is

SHUTTING_DOWN = "the server is shutting down; retry on another replica"
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_ENTRY_FIELDS = frozenset({"tenant", "key_sha256", "rights", "limits", "adapters"})
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class TenantLimits:
    max_inflight: int | None = None  # requests in flight at once, over both transports
    max_streams: int | None = None  # generation streams at once
    max_new_tokens: int | None = None  # the most tokens one generation may ask for

    def __post_init__(self) -> None:
        for name in ("max_inflight", "max_streams", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"limit {name} must be a whole number of at least 1, got {value!r}")


@dataclass(frozen=True)
class Tenant:
    name: str
    rights: frozenset[Right] = frozenset({Right.INFER})
    limits: TenantLimits = field(default_factory=TenantLimits)
    public_adapters: bool = False  # adapters its jobs publish are served to every tenant


class ApiKeys:
    """sha256 digests of keys -> their tenants."""

    def __init__(self, entries: list[tuple[bytes, Tenant]]) -> None:
        if not entries:
            raise ValueError("the API keys document holds no keys")
        self._entries = tuple(entries)

    def authenticate(self, key: str) -> Tenant | None:
        """The tenant whose key this is (every stored digest is compared, in constant time)."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found: Tenant | None = None
        for stored, tenant in self._entries:
            if hmac.compare_digest(stored, digest):
                found = tenant
        return found

    @classmethod
    def load(cls, path: Path) -> ApiKeys:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the API keys file {str(path)!r}: {exc.strerror}") from None
        if path.suffix.lower() == ".toml":
            try:
                document: Any = tomllib.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ValueError(f"the API keys file {str(path)!r} is not TOML: {exc}") from None
        else:
            document = _json(raw.decode("utf-8", "replace"), f"the API keys file {str(path)!r}")
        return cls.from_document(document)

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        """The document given inline (an environment variable from a Kubernetes Secret)."""
        return cls.from_document(_json(text, "the API keys"))

    @classmethod
    def from_document(cls, document: Any) -> ApiKeys:
        if isinstance(document, Mapping):
            unknown = sorted(str(k) for k in document if k != "keys")
            if unknown:
                raise ValueError(f"API keys: unknown field {', '.join(map(repr, unknown))}; expected 'keys'")
            document = document.get("keys")
        if not isinstance(document, list):
            raise ValueError("API keys: expected {'keys': [ {tenant, key_sha256, rights, limits}, ... ]}")
        entries: list[tuple[bytes, Tenant]] = []
        tenants: set[str] = set()
        for index, raw in enumerate(document):
            digests, tenant = _entry(raw, f"API keys entry {index}")
            if tenant.name in tenants:
                raise ValueError(
                    f"API keys entry {index}: tenant {tenant.name!r} appears twice; give one entry "
                    "per tenant (key_sha256 may list several keys)"
                )
            tenants.add(tenant.name)
            for digest in digests:
                if any(hmac.compare_digest(digest, seen) for seen, _ in entries):
                    raise ValueError(f"API keys entry {index}: a key_sha256 appears twice")
                entries.append((digest, tenant))
        return cls(entries)


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what}: not JSON: {exc}") from None


def _entry(raw: Any, where: str) -> tuple[list[bytes], Tenant]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected an object")
    unknown = sorted(str(k) for k in raw if k not in _ENTRY_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field {', '.join(map(repr, unknown))}")
    name = raw.get("tenant")
    if not isinstance(name, str) or not _TENANT.fullmatch(name):
        raise ValueError(f"{where}: 'tenant' must be 1-128 letters, digits, '.', '_' or '-', got {name!r}")
    where = f"{where} (tenant {name!r})"
    keys = raw.get("key_sha256")
    keys = [keys] if isinstance(keys, str) else keys
    if not isinstance(keys, list) or not keys:
        raise ValueError(f"{where}: 'key_sha256' must be a sha256 hex digest or a list of them")
    digests = []
    for key in keys:
        if not isinstance(key, str) or not _DIGEST.fullmatch(key):
            raise ValueError(
                f"{where}: 'key_sha256' must hold sha256 hex digests (64 hex digits; the key itself is "
                'never stored): printf %s "$KEY" | sha256sum'
            )
        digests.append(bytes.fromhex(key))
    rights = raw.get("rights", ["infer"])
    if not isinstance(rights, list) or not all(isinstance(r, str) for r in rights):
        raise ValueError(f"{where}: 'rights' must be a list of infer, tune, manage")
    try:
        granted = frozenset(Right(r) for r in rights)
    except ValueError:
        raise ValueError(f"{where}: 'rights' may hold infer, tune and manage, got {rights!r}") from None
    limits = raw.get("limits", {})
    if not isinstance(limits, Mapping):
        raise ValueError(f"{where}: 'limits' must be an object")
    unknown = sorted(str(k) for k in limits if k not in ("max_inflight", "max_streams", "max_new_tokens"))
    if unknown:
        raise ValueError(f"{where}: unknown limit {', '.join(map(repr, unknown))}")
    try:
        tenant_limits = TenantLimits(**limits)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    adapters = raw.get("adapters", "private")
    if adapters not in ("private", "public"):
        raise ValueError(f"{where}: 'adapters' must be 'private' or 'public', got {adapters!r}")
    return digests, Tenant(name, granted, tenant_limits, public_adapters=adapters == "public")


# -- the caller of the request being served -------------------------------------------------
_CALLER: ContextVar[Tenant | None] = ContextVar("taskgate_caller", default=None)


def current_tenant() -> Tenant | None:
    """The tenant of the request this task serves (None: no API keys, or outside a request)."""
    return _CALLER.get()


@contextlib.contextmanager
def acting_as(tenant: Tenant | None) -> Iterator[None]:
    token = _CALLER.set(tenant)
    try:
        yield
    finally:
        _CALLER.reset(token)


class TenantCounter:
    """How many of something each tenant holds at once, within a limit of its own."""

    def __init__(self, what: str, limit_of: Callable[[TenantLimits], int | None]) -> None:
        self._what = what  # e.g. "requests in flight"
        self._limit_of = limit_of
        self._counts: dict[str, int] = {}

    def count(self, tenant: str) -> int:
        return self._counts.get(tenant, 0)

    @contextlib.contextmanager
    def hold(self, tenant: Tenant | None) -> Iterator[None]:
        """One place of ``tenant``'s for the block; beyond its limit, OVERLOADED at once."""
        limit = self._limit_of(tenant.limits) if tenant is not None else None
        if tenant is None or limit is None:
            yield
            return
        count = self._counts.get(tenant.name, 0)
        if count >= limit:
            raise Overloaded(
                f"tenant {tenant.name!r} already has {count} {self._what} (its limit); retry when one "
                "has ended",
                retry_after_s=1.0,
            )
        self._counts[tenant.name] = count + 1
        try:
            yield
        finally:
            remaining = self._counts[tenant.name] - 1
            if remaining:
                self._counts[tenant.name] = remaining
            else:  # only tenants with something held have an entry
                del self._counts[tenant.name]


def check_new_tokens(tenant: Tenant | None, max_new_tokens: int) -> None:
    """INVALID_INPUT when a generation asks for more tokens than the tenant may."""
    own = tenant.limits.max_new_tokens if tenant is not None else None
    if tenant is not None and own is not None and max_new_tokens > own:
        raise InvalidInput(
            f"max_new_tokens {max_new_tokens} is more than tenant {tenant.name!r} may ask for ({own})"
        )


class Admission:
    """The one decision per request, both transports: probes pass (readiness not while
    draining); while draining nothing else is admitted; an ``infer`` call beyond the process's
    ``max_inflight`` requests in flight (every admitted request and stream, both transports, until
    its last byte) is OVERLOADED at once, before its key is checked or its body read (probes,
    management and tuning are counted, never refused by it); with keys, the key names a tenant
    with the route's right; a tenant stays within its in-flight limit. ``admitted`` counts the
    request for the drain and the tenant, and makes its tenant the current caller; ``check`` and
    ``admitted`` run with no await between them, so the count cannot overshoot."""

    def __init__(
        self, keys: ApiKeys | None = None, drain: Drain | None = None, max_inflight: int = 0
    ) -> None:
        self.keys = keys
        self.drain = drain if drain is not None else Drain()
        self.max_inflight = max_inflight  # process-wide, both transports (0: none); see check
        self._inflight = TenantCounter("requests in flight", lambda limits: limits.max_inflight)

    def inflight(self, tenant: str) -> int:
        """The requests of ``tenant`` in flight now."""
        return self._inflight.count(tenant)

    def sheds(self, route: Route) -> bool:
        """Whether a call of ``route`` is refused OVERLOADED now (the process-wide limit)."""
        return (
            route is Right.INFER and 0 < self.max_inflight <= self.drain.inflight and not self.drain.draining
        )

    def overloaded(self) -> Overloaded:
        return Overloaded(
            f"the server has {self.drain.inflight} requests in flight (limit {self.max_inflight}); "
            "retry shortly",
            retry_after_s=1.0,
        )

    def check(self, route: Route, key: str | None) -> Tenant | None:
        """The caller's tenant (None: no keys, or a probe), or the refusal raised."""
        if route is Probe.LIVENESS:
            return None
        if self.drain.draining:
            raise Unavailable(SHUTTING_DOWN, retry_after_s=1.0)
        if self.sheds(route):
            raise self.overloaded()
        if route is Probe.READINESS or self.keys is None:
            return None
        if not key:
            raise Unauthenticated("an API key is required: send it as 'authorization: Bearer <key>'")
        tenant = self.keys.authenticate(key)
        if tenant is None:
            raise Unauthenticated("the API key is not valid")
        if route not in tenant.rights:
            raise PermissionDenied(f"tenant {tenant.name!r} lacks the {route.value!r} right this call needs")
        return tenant

    @contextlib.contextmanager
    def admitted(self, tenant: Tenant | None) -> Iterator[None]:
        """The request counted for the drain and within its tenant's in-flight limit (OVERLOADED
        beyond it), with ``tenant`` as the current caller, for the block."""
        if tenant is not None:
            note_tenant(tenant.name)
        with self._inflight.hold(tenant), self.drain.track(), acting_as(tenant):
            yield


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` value (None when absent or another scheme)."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return key.strip() or None
