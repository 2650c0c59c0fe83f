"""The server side of a connection, from the socket to the hub.

- :mod:`.endpoint`: the ASGI app of a hub's WebSocket (Origin, credentials, permissions,
  the negotiate token), which hands the socket to a connection.
- :mod:`.connection`: :class:`~.connection.HubConnection`, the sequence of one connection's life.
- :mod:`.handshake`: reading the handshake request.
- :mod:`.dispatcher`: :class:`~.dispatcher.HubDispatcher`, invocations on the hub.
- :mod:`.outbox`: :class:`~.outbox.Outbox`, the bounded queue of outgoing records and its writer.
- :mod:`.state`: :class:`~.state.ConnectionState`.
- :mod:`.negotiate`: the negotiate and access-token views; :mod:`.routing`: their URL patterns.
"""
