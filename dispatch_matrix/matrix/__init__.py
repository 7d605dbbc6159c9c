"""Everything that speaks Matrix: the nio client and the device it signs in as, the sync
loop, the router, the outbox (with the shape of what it says: Markdown, replies, edits,
mentions) and its sender, polls on the wire, and files.

Knows no feature: the router hands what a sync brought to the handlers it is given
(`handlers.py`: the trust gate, tasks, voice), which the feature packages implement.
Imports `core` and `store` only."""
