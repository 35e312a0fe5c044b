"""The clients the steps talk through: the ACK OpenAPI (:mod:`clients.ack`), Kubernetes (:mod:`clients.kube`), OSS
(:mod:`clients.oss`), and how a spec plus a block name becomes a connected cluster (:mod:`clients.cluster`).
Retries, error translation and secret redaction live here, not in the steps."""
