"""The door: the owner's rules in Claude Code's syntax and the policy every tool call
passes first (allow, ask or deny), with the shell judge that allows only literal words.

Pure: no I/O. Imports `core` only."""
