"""The agent's tools: `bash`, `read`, `write`, `edit`, `glob`, `grep`, `send_file`, their
inputs and their registry (the top-level `tools/` folder holds developer scripts instead).

Owns: what a tool does once the policy let it through, confinement of the paths it
touches, and the process groups it starts. May import `core`, `store`, `permissions`
(a tool call's own checks) and `sandbox` (every shell call runs inside it); never `matrix`,
`queue` or `agent`. Import from the submodules: the registry brings every tool, which the
daemon loads off its start-up path.
"""
