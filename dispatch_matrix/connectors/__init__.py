"""Connectors: MCP servers (their tools as `mcp__SERVER__TOOL`) and the API's web tools.

Import from the submodules (`connectors.hub`, `connectors.web`, …): this package's
`settings` is imported by the config model, so this file stays empty of imports.
"""
