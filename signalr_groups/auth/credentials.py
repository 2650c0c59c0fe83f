"""How a connection authenticated, and what ends its authentication: the :class:`Credentials` value object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from channels.db import database_sync_to_async

from signalr_groups.auth.access_tokens import access_token_expiry
from signalr_groups.auth.identity import bearer_from_scope, session_still_valid, token_still_valid, user_from_token

AuthKind = Literal["token", "session"]


def session_state(session: Any) -> tuple[str | None, float | None]:
    """The session key and expiry (Unix time) of a Django session (reads it: call in a thread).

    Database-backed sessions store their real expiry; ``get_expiry_date()`` would answer "now plus
    SESSION_COOKIE_AGE" for a session without a custom expiry.
    """
    key = session.session_key
    model = getattr(session, "get_model_class", None)
    if key and model is not None:
        stored = model()._default_manager.filter(session_key=key).values_list("expire_date", flat=True).first()
        if stored is not None:
            return key, stored.timestamp()
    return key, session.get_expiry_date().timestamp()


def is_authenticated(user: Any) -> bool:
    """Whether ``user`` is an authenticated Django user (``None`` and ``AnonymousUser`` are not)."""
    return bool(getattr(user, "is_authenticated", False))


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who a connection is, how it proved it, and until when.

    ``kind`` is ``"token"`` (a bearer access token), ``"session"`` (a Django session cookie) or
    ``None`` (anonymous, or a user set by other middleware). ``account_id`` is the Django user's
    pk as a string (account-level revocation), ``session_key`` the cookie session's key (a
    logout closes only that session's connections).
    """

    user: Any = None
    kind: AuthKind | None = None
    account_id: str | None = None
    session_key: str | None = None
    expires_at: float | None = None
    token: str | None = None

    @classmethod
    def anonymous(cls) -> Credentials:
        """No user."""
        return cls()

    def expired(self, now: float) -> bool:
        """Whether the token or session has expired at Unix time ``now``."""
        return self.expires_at is not None and now >= self.expires_at

    def expiry_close(self) -> tuple[str, bool]:
        """The Close error and ``allowReconnect`` for an expired credential.

        A token can be renewed by the client's ``accessTokenFactory`` (reconnect allowed); an
        expired session cannot.
        """
        if self.kind == "token":
            return "Your access token expired.", True
        return "Your session expired.", False

    @property
    def checkable(self) -> bool:
        """Whether :meth:`still_valid` has anything to check."""
        return (self.kind == "token" and self.token is not None) or self.kind == "session"

    def still_valid(self) -> bool:
        """Whether the credential still authenticates the same user (reads the database: call in a thread)."""
        user_pk = getattr(self.user, "pk", None)
        if self.kind == "token" and self.token is not None:
            return token_still_valid(self.token, user_pk)
        if self.kind == "session":
            return session_still_valid(self.session_key, user_pk)
        return True


class InvalidAccessTokenError(Exception):
    """A bearer token was sent but is forged, expired or no longer valid (answer 401, never downgrade)."""


async def credentials_from_scope(scope: dict[str, Any]) -> Credentials:
    """The credentials of a WebSocket (or HTTP) request's ASGI scope: its bearer token, else its session user.

    A valid token replaces ``scope["user"]``. Raises :class:`InvalidAccessTokenError` for a token
    that is present but invalid.
    """
    user = scope.get("user")
    token = bearer_from_scope(scope)
    if token is not None:
        user = await user_from_token(token)
        if user is None:
            raise InvalidAccessTokenError("Invalid or expired access token.")
        scope["user"] = user
        return Credentials(user, "token", str(user.pk), None, access_token_expiry(token), token)
    account_id = str(getattr(user, "pk", "")) if is_authenticated(user) else None
    if is_authenticated(user) and scope.get("session") is not None:
        session_key, expires_at = await database_sync_to_async(session_state)(scope["session"])
        return Credentials(user, "session", account_id, session_key, expires_at)
    return Credentials(user, None, account_id)
