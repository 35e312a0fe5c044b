"""The ``elastic-inference`` command line: the sandbox, deploy/plan, the demo launcher."""
