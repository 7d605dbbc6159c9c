"""Connectors: MCP servers (their tools as `mcp__SERVER__TOOL`) and the API's web tools.

Import from the submodules (`connectors.hub`, `connectors.web`, …): this package's
`settings` is imported by the config model, so this file stays empty of imports.

May import `core`, `store`, `permissions` and `toolbox`; never `matrix`, `queue`, `agent`
or `app`. (`startup.py`, which tells the room of a server's failure, still does: it is the
daemon's wiring, and moves with it.)
"""
