"""lookout: talk to your cameras over MQTT."""

__version__ = "0.1.0"
