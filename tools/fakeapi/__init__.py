"""The parts of the fake Messages API (``tools/fake_messages_api.py``): the model catalogue,
scripted turns, request validation, thinking signatures, SSE streams and the prompt cache.

Standard library only (the server itself needs aiohttp), importable with ``tools/`` on
``sys.path``: ``from fakeapi.cache import PromptCache``.
"""
