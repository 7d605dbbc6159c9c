"""The application: the config, the daemon and the wiring that builds every part from it
(`wiring`; the agent, its tools and their wall in `agent_kit`), its health record and
state folder, the private homeserver, and the operator's commands (`init`, `doctor`,
`status`, `install-service`).

May import every package; no package imports it except for the config model."""
