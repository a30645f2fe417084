"""LLM agents and the debate over disputed items (langgraph).

``aggregate`` reads answers and turns votes into verdicts (pure functions); ``debate`` builds
the langgraph debate from a ``DebateSpec``; ``runner`` runs debates over many items through
the LLM seam of ``views.llm``. Never imports the orchestrator.
"""
