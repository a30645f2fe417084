"""LLM agents and the debate over disputed items (langgraph).

The co-training core records disputed items in the store's ``disputes`` table; the debate
that consumes them lands with the debate issue. Never imports the orchestrator.
"""
