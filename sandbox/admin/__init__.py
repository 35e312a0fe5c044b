"""The sandbox admin endpoint (faults)."""
