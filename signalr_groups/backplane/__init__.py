"""The backplane: how server processes reach each other, over a Channels channel layer.

- :mod:`.layer`: which layer the app uses, and whether a layer group may hold another process.
- :mod:`.messages`: the type names of the messages processes exchange, and who this process is.
- :mod:`.rpc`: the one request/reply mechanism (ask one owner, or gather every member's answer).
- :mod:`.membership`: this process's channel and the layer groups it is in (joined with the first
  local member, left with the last, re-joined after a Redis outage).
- :mod:`.liveness`: heartbeats of live processes in Redis, so quorums skip the dead.
- :mod:`.claims`: single use of a connection token across every process.
- :mod:`.redis_internals`: every use of channels-redis internals, in one adapter that fails loudly.

It knows nothing of hubs, connections or features: it moves dicts between processes.
"""
