"""The lifetime manager: this process's connections of each hub, and the fan-out path.

- :mod:`.registry`: the synchronous index of connections by id, group, user and account.
- :mod:`.manager`: :class:`~.manager.HubLifetimeManager`, which orchestrates the registry, the
  layer membership (:mod:`signalr_groups.backplane`), the keep-alive sweep and the extensions.
- :mod:`.extensions`: the typed hooks through which features plug in.
- :mod:`.managers`: one manager per hub per event loop.
- :mod:`.sending`: the one send path, and commands for a connection wherever it lives.
- :mod:`.fairness`: when a busy loop gives the event loop back.
"""
