"""The outputs of the read path: each turns the poller's events into what its consumers see.

See ``baxo_mqtt.bridge.events`` for the events and the ``Output`` protocol.
"""
