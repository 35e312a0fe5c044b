"""The sandbox's TF-Serving-compatible pod runtime (see :mod:`sandbox.runtime.service` for how it plugs in).

Modules: :mod:`.flags` (the command line), :mod:`.pbtxt` + :mod:`.model_config` (the model config text proto and
the version policy), :mod:`.podfs` (paths through the pod's volumes), :mod:`.servables` (loading a version),
:mod:`.core` (version states, handles), :mod:`.tensors` (JSON <-> tensors), :mod:`.rest` (the REST API),
:mod:`.capacity` (concurrency and service time), :mod:`.server` (one model-server process),
:mod:`.service` (the glue).
"""
