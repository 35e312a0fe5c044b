"""Receivers of outside events: the model-registry webhook that turns a signed delivery into a Prefect event."""
