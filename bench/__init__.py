"""The benchmark harness: baxo-mqtt against a raw paho publisher, the ceiling.

Run it with ``scripts/bench`` (or ``python -m bench.run``); ``bench/README.md``
says what is measured and how. Every measured program is a separate process
(mosquitto, the BAXO simulator, the subscriber, the ceiling publisher, the
bridge), so none of them shares a GIL with another, and their CPU time and
memory are read from ``/proc`` the same way for all.
"""
