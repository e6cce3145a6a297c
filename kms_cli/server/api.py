"""The contract between the HTTP layer (app.py, worker.py) and the endpoint handlers (transit.py,
kv.py, sys.py): what a handler receives, what it returns, how it refuses.

A handler is `def handler(req: Request) -> dict | None` and runs in the vault worker thread, inside
the batch's write transaction and a savepoint of its own (store.savepoint()), so it may read and
write through the vault layer (`kms_cli.vault.*`) as a command does; its audit entry is written by
the vault layer's own `vault.operation(...)` with `req.vault.audit.actor` set to the token's name and
the client address for the duration of the call. It returns the JSON object to send with status 200
(Vault's shape: `{"data": {...}}`, built by the handler) or None for 204 (another status with a JSON
body: set `req.extra["status"]`, or return a `(status, body)` tuple; a body that is not JSON, e.g.
Prometheus text: return `worker.Raw(bytes, content_type)`), or raises:
  - ApiError(status, message): that status and `{"errors": [message]}`;
  - Forbidden (from req.authorize): 403 `{"errors": ["permission denied"]}`, audited as denied;
  - a KmsError: mapped by app.py (NotFoundError 404, UsageError 400, IntegrityError 400 "failed
    decryption"-like, StateError 400, UnavailableError 503, others 500), message one line, no secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Forbidden(ApiError):
    """The token may not do this operation on this name (or the name is outside its namespace:
    a missing name there is 403 too, so existence cannot be probed)."""

    def __init__(self, why: str = "permission denied"):
        super().__init__(403, "permission denied")
        self.why = why


@dataclass
class Request:
    method: str                      # GET, POST, PUT, DELETE, LIST
    path: str                        # /v1/transit/encrypt/app/k
    params: dict[str, str]           # the route's named groups (e.g. {"name": "app/k"})
    query: dict[str, str]            # ?version=2 ...
    body: dict[str, Any] | None = field(repr=False)  # parsed JSON object (None for no body): may hold plaintext
    client: str = ""                 # "127.0.0.1:53412"
    vault: Any = field(default=None, repr=False)  # the unlocked kms_cli.vault.Vault (set by the worker)
    token: Any = field(default=None, repr=False)  # the authenticated rows.TokenRecord (None: sys/health without one)
    extra: dict = field(default_factory=dict)

    def authorize(self, op: str, name: str | None) -> None:
        """Raise Forbidden unless the token allows `op` (one of vault.tokens.OPS) on the full `name`."""
        from kms_cli.vault import tokens

        if self.token is None or not tokens.allows(self.token, op, name):
            raise Forbidden(f"{op} on {name or '-'}")


@dataclass
class Route:
    methods: tuple[str, ...]         # e.g. ("POST", "PUT")
    pattern: re.Pattern              # full-match regex over the path; named groups -> Request.params
    handler: Callable[[Request], dict | None]
    needs_token: bool = True         # False only for sys/health (and the mount discovery? no: token)
    writes: bool = True              # False: the handler only reads (it may still be audited)
