"""What the flow and the sandbox share, and nothing else: the DeploySpec with its derived names, the demo model
format. Imports none of the project's other packages (import-linter keeps it so)."""
