"""The sandbox's cluster-autoscaler: :mod:`.simulate` (pure) and :mod:`.service` (the loop)."""
