"""The agent's tools and the permission policy that every call passes first."""
