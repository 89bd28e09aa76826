"""The daemon: poll BAXO, publish on MQTT, and carry /set commands back as writes."""
