"""Real local parts the tests drive: a mosquitto broker, an MQTT watcher, waits."""
