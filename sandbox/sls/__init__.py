"""The sandbox's Simple Log Service (SLS) endpoint: GetLogs over the ingress access log (see :mod:`.service`)."""
