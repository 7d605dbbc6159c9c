"""Identity: the bot's cross-signing keys, the owners' pinned identities, the trust gate
that decides whether an event may command the bot, emoji verification (SAS) and pairing,
and what happens to an owner's messages while their identity is not trusted. Pinned
identities and held messages are its tables (`tables.py`; their schema is in the store's
one migration list).

Implements the router's `Gate` (`gate.py`, with the pure trust decision it applies). May
import `core`, `store` and `matrix`."""
