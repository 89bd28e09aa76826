"""Sparkplug B 3.0 edge node: payload codec, naming, births and the node's state machine."""
