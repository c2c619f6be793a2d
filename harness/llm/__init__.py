"""LLM access: the backend interface, the caching and retrying client, budget, batching, prompt templates and rendering, backends."""
