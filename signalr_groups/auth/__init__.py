"""Who is connecting, and may they: credentials, tokens, the Origin check, permissions, user identifiers.

- :mod:`.credentials`: the :class:`~.credentials.Credentials` value object, read from a request.
- :mod:`.access_tokens`: bearer tokens for native clients; :mod:`.identity`: reading them.
- :mod:`.connection_tokens`: the signed, single-use tokens negotiate issues.
- :mod:`.origin`: the browser Origin check; :mod:`.permissions`: DRF-style permission classes.
- :mod:`.users`: user identifier providers (``USER_ID_PROVIDER``).

Nothing here knows about hubs' connections or the channel layer.
"""
