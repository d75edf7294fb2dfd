"""OpenAI wire formats: request validation/translation and answer rendering, one endpoint per module."""
