"""Dashboard sessions, passwords, API keys and the checks the /api routes share."""
