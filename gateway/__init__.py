"""PrivateRouter: an authenticated, metered, OpenAI-compatible gateway in front of Ollama."""

__version__ = "0.1.0"

import sys

# httpx imports its command-line tool at import time when click, rich and pygments are installed
# (rich is ours, for the operator commands): about 3 MB of modules no process of ours runs. A None
# entry makes that import raise ImportError, which httpx catches (it then has no `httpx.main`).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
