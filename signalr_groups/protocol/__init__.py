"""The SignalR hub protocol: message types, the JSON encoding and the handshake."""
