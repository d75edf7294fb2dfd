"""Upstream clients and OpenAI <-> Ollama translation. Imports nothing from `gateway`."""
