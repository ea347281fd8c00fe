"""Provider and framework adapters: each one a module of its own, importing its SDK only when used.

Provider adapters (``openai``, ``openai_responses``, ``anthropic``, ``llamaindex``) turn a request into cache
params with ``prepare_params`` (every answer-changing parameter by name; messages as content blocks; binary parts
through the normalizer) and a response into content blocks with ``to_blocks`` and back with ``from_blocks``; the
first three also offer ``cached_create``, which caches plain and streamed calls. ``openai_agents`` and
``pydantic_ai`` wrap those frameworks' models. ``docs/adapters.md`` lists what each one keys on.

Adapters never import one another; what they share lives in the private modules beside them. A missing SDK raises
:class:`agent_cache.ConfigurationError` naming its extra, e.g. ``pip install "agent-cache[openai]"``.
"""
