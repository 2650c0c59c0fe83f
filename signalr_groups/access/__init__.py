"""Access control, a feature that plugs into the core: grants, the join guard, revocation and its audit trail.

- :mod:`.grants`: which restricted groups a grant covers, and until when (pure functions).
- :mod:`.grant_store`: reading a user's active grants.
- :mod:`.guard`: :class:`~.guard.GroupAccessGuard`, the lifetime-manager extension that checks
  joins and ends memberships whose grant ended.
- :mod:`.grant_changes`: publishing a user's new grants to every process, and waiting for them.
- :mod:`.revocation`: account revocation ("disconnect everywhere") and its extension.
- :mod:`.audit`: the revocation audit trail.
- :mod:`.receivers`: the Django signal receivers that start all of the above.

``SignalRGroupsConfig.ready()`` registers the extensions and connects the receivers; nothing in
the core imports this package.
"""
