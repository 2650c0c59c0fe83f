"""The programming model, as SignalR names it: hubs, their methods, and whom they reach.

- :mod:`.hub`: :class:`~.hub.Hub`, the base class; :mod:`.methods`: ``@hub_method`` and the
  binding of client arguments.
- :mod:`.clients`: ``clients.all / caller / others / group(name) / user(id) …``.
- :mod:`.groups`: ``groups.add_to_group(connection_id, name)`` and the user-scoped and presence
  calls.
- :mod:`.caller_context`: ``self.context`` inside a hub method.
- :mod:`.hub_context`: ``get_hub_context(Hub)`` for views, tasks and commands.
"""
