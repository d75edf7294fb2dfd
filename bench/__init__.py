"""PrivateRouter's benchmark: the gateway against the direct path to Ollama, on this machine.

`python -m bench` (see bench/README.md) starts the Ollama emulator, the gateway on PostgreSQL + Redis
and on the embedded SQLite default, drives them with `wrk`, and writes bench/RESULTS.md and
bench/results.json. Every byte of traffic stays on 127.0.0.1 and every load loop is bounded.
"""
