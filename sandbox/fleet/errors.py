"""Errors of the fleet's in-process API (the fleet has no wire protocol of its own; ACK maps these)."""


class FleetError(ValueError):
    """A request the fleet cannot honour (unknown pool, instance, type or zone; bad stock value)."""
