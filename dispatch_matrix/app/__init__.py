"""The application: the config, the daemon that builds every part from it, its health
record and state folder, the private homeserver, and the operator's commands (`init`,
`doctor`, `status`, `install-service`).

May import every package; no package imports it except for the config model."""
