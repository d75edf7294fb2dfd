"""End-to-end smoke test of a running deployment, with the standard library only.

`privaterouter smoke --url URL [--admin-token T] [--skip-rate-limit]` (or `python3 -m gateway.smoke`
from a checkout, on any machine with Python 3.11 and nothing installed) walks what a new user does:
health, sign-up, login, an API key, a chat completion, a streamed one, embeddings, the usage list,
the balance, the rate limit, and finally cleans up (deletes its keys; with an admin token also
disables the user it created).
One `PASS`/`FAIL`/`SKIP` line per step; exit status 0 only when no step failed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TextIO

TIMEOUT = 60.0  # seconds per HTTP call
USAGE_WAIT = 15.0  # seconds for usage events to be written (they are batched)


class StepFailed(Exception):
    """A step's check did not hold; the message says what was expected and what came."""


@dataclass
class Answer:
    """One HTTP answer: status, lower-cased headers, raw body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or StepFailed quoting it."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise StepFailed(f"HTTP {self.status}: not JSON: {self.body[:200]!r}") from None


def _describe(answer: Answer) -> str:
    try:
        error = json.loads(answer.body).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if isinstance(error, dict) and error.get("code"):
        return f"HTTP {answer.status} {error.get('code')}: {error.get('message')}"
    return f"HTTP {answer.status}: {answer.body[:200]!r}"


@dataclass
class Smoke:
    """One run against `base_url`; `out` receives the report lines."""

    base_url: str
    admin_token: str | None = None
    skip_rate_limit: bool = False
    out: TextIO = sys.stdout
    failures: int = 0
    state: dict[str, Any] = field(default_factory=dict)

    # --- HTTP -------------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        """One request (JSON body, bearer token); HTTP errors are answers, an unreachable host is StepFailed."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url.rstrip("/") + path, data=data, method=method)
        request.add_header("User-Agent", "privaterouter-smoke")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())
        except (urllib.error.URLError, OSError) as error:
            raise StepFailed(f"cannot reach {self.base_url}: {getattr(error, 'reason', error)}") from None

    def expect(self, answer: Answer, status: int) -> Any:
        """The JSON body of `answer` if it has `status`, else StepFailed naming the error code."""
        if answer.status != status:
            raise StepFailed(f"expected HTTP {status}, got {_describe(answer)}")
        return answer.json()

    # --- the run ----------------------------------------------------------------------------------

    def step(self, name: str, check: Callable[[], str], needs: Sequence[str] = ()) -> bool:
        """Run `check` and print its PASS/FAIL line; SKIP (a failure) when an earlier step left out `needs`."""
        missing = [item for item in needs if item not in self.state]
        if missing:
            self.out.write(f"SKIP {name}: needs {', '.join(missing)} from an earlier step\n")
            self.failures += 1  # a skipped check is not a passed one
            return False
        started = time.monotonic()
        try:
            detail = check()
        except StepFailed as exc:
            self.out.write(f"FAIL {name}: {exc}\n")
            self.failures += 1
            return False
        self.out.write(f"PASS {name} ({(time.monotonic() - started) * 1000:.0f} ms){': ' + detail if detail else ''}\n")
        self.out.flush()
        return True

    def run(self) -> int:
        """Every step in order (clean-up always); the number of failed or skipped steps."""
        self.step("health", self.health)
        self.step("sign-up", self.signup)
        self.step("login", self.login, needs=["email"])
        self.step("key", self.key, needs=["token"])
        self.step("models", self.models, needs=["key"])
        self.step("chat", self.chat, needs=["chat_model"])
        self.step("stream", self.stream, needs=["chat_model"])
        self.step("embeddings", self.embeddings, needs=["key"])
        self.step("usage", self.usage, needs=["token"])
        self.step("balance", self.balance, needs=["starting_balance"])
        if self.skip_rate_limit:
            self.out.write("SKIP rate limit: --skip-rate-limit\n")
        else:
            self.step("rate limit", self.rate_limit, needs=["token"])
        self.step("clean-up", self.cleanup, needs=["token"])
        verdict = "all steps passed" if not self.failures else f"{self.failures} step(s) failed"
        self.out.write(f"smoke {self.base_url}: {verdict}\n")
        return self.failures

    # --- steps ------------------------------------------------------------------------------------

    def health(self) -> str:
        """/health is ok and /health/readiness 200."""
        body = self.expect(self.call("GET", "/health"), 200)
        if body.get("status") != "ok":
            raise StepFailed(f"/health said {body}")
        ready = self.call("GET", "/health/readiness")
        if ready.status != 200:
            raise StepFailed(f"/health/readiness: {_describe(ready)} {ready.json().get('checks')}")
        return "live and ready"

    def signup(self) -> str:
        """A throw-away user; remembers its token and starting balance."""
        email = f"smoke-{secrets.token_hex(6)}@example.com"
        password = secrets.token_urlsafe(24)
        body = self.expect(self.call("POST", "/api/auth/signup",
                                     {"email": email, "password": password, "name": "privaterouter smoke"}), 201)
        self.state.update(email=email, password=password, user_id=body["user"]["id"], token=body["access_token"])
        balance = self.expect(self.call("GET", "/api/billing/balance", token=body["access_token"]), 200)
        self.state["starting_balance"] = Decimal(balance["balance_usd"])
        return f"{email}, starting balance {balance['balance_usd']} USD"

    def login(self) -> str:
        """The password works and /api/auth/me is that user."""
        body = self.expect(self.call("POST", "/api/auth/login",
                                     {"email": self.state["email"], "password": self.state["password"]}), 200)
        self.state["token"] = body["access_token"]
        me = self.expect(self.call("GET", "/api/auth/me", token=body["access_token"]), 200)
        if me.get("email") != self.state["email"] and me.get("user", {}).get("email") != self.state["email"]:
            raise StepFailed(f"/api/auth/me answered another user: {me}")
        return ""

    def key(self) -> str:
        """A fresh API key."""
        body = self.expect(self.call("POST", "/api/keys", {"name": "smoke"}, token=self.state["token"]), 201)
        self.state["key"] = body["key"]
        self.state.setdefault("key_ids", []).append(body["api_key"]["id"])
        return f"{body['key'][:12]}..."

    def models(self) -> str:
        """/v1/models lists a chat model (and maybe an embedding model) for the new user."""
        body = self.expect(self.call("GET", "/v1/models", token=self.state["key"]), 200)
        data = body.get("data") or []
        chat = [item["id"] for item in data if item.get("kind", "chat") == "chat"]
        embedding = [item["id"] for item in data if item.get("kind") == "embedding"]
        if not chat:
            raise StepFailed(f"no chat model available to a new user: {[item.get('id') for item in data]}")
        self.state["chat_model"] = chat[0]
        if embedding:
            self.state["embedding_model"] = embedding[0]
        return f"{len(data)} models; using {chat[0]}" + (f" and {embedding[0]}" if embedding else "")

    def chat(self) -> str:
        """A short non-streaming chat with usage."""
        body = self.expect(self.call("POST", "/v1/chat/completions", token=self.state["key"], body={
            "model": self.state["chat_model"], "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello in five words."}]}), 200)
        content = body["choices"][0]["message"].get("content") or body["choices"][0]["message"].get("reasoning_content")
        if not content or not body.get("usage", {}).get("total_tokens"):
            raise StepFailed(f"empty answer or no usage: {body}")
        return f"{body['usage']['total_tokens']} tokens"

    def stream(self) -> str:
        """A streamed chat: SSE to [DONE], no error frame, a usage chunk."""
        answer = self.call("POST", "/v1/chat/completions", token=self.state["key"], body={
            "model": self.state["chat_model"], "max_tokens": 16, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Count to three."}]})
        if answer.status != 200 or not answer.headers.get("content-type", "").startswith("text/event-stream"):
            raise StepFailed(f"expected an event stream, got {_describe(answer)}")
        frames = [line[6:] for line in answer.body.decode().splitlines() if line.startswith("data: ")]
        if not frames or frames[-1] != "[DONE]":
            raise StepFailed(f"the stream did not end with [DONE]: {frames[-3:]}")
        chunks = [json.loads(frame) for frame in frames[:-1]]
        errors = [chunk["error"] for chunk in chunks if "error" in chunk]
        if errors:
            raise StepFailed(f"error frame: {errors[0]}")
        usage = [chunk["usage"] for chunk in chunks if chunk.get("usage")]
        if not usage:
            raise StepFailed("no usage chunk although include_usage was asked for")
        return f"{len(chunks)} chunks, {usage[-1]['total_tokens']} tokens"

    def embeddings(self) -> str:
        """Two inputs, two vectors (when the plan has an embedding model)."""
        model = self.state.get("embedding_model")
        if model is None:
            return "no embedding model on the new user's plan (nothing to check)"
        body = self.expect(self.call("POST", "/v1/embeddings", token=self.state["key"],
                                     body={"model": model, "input": ["smoke test", "second input"]}), 200)
        vectors = [item["embedding"] for item in body.get("data", [])]
        if len(vectors) != 2 or not vectors[0]:
            raise StepFailed(f"expected two vectors, got {len(vectors)}")
        return f"2 vectors of {len(vectors[0])} dimensions"

    def usage(self) -> str:
        """The calls appear in /api/usage (written in batches: polled up to USAGE_WAIT seconds)."""
        deadline = time.monotonic() + USAGE_WAIT
        expected = sum(1 for name in ("chat_model", "embedding_model") if name in self.state) + (
            1 if "chat_model" in self.state else 0)
        while True:
            body = self.expect(self.call("GET", "/api/usage", token=self.state["token"]), 200)
            if body.get("total", 0) >= expected:
                statuses = sorted({item["status"] for item in body["items"]})
                if statuses != ["success"]:
                    raise StepFailed(f"usage events are not all successful: {statuses}")
                return f"{body['total']} events"
            if time.monotonic() > deadline:
                raise StepFailed(f"expected {expected} usage events within {USAGE_WAIT:g}s, found {body.get('total')}")
            time.sleep(0.25)

    def balance(self) -> str:
        """The balance went down."""
        body = self.expect(self.call("GET", "/api/billing/balance", token=self.state["token"]), 200)
        now = Decimal(body["balance_usd"])
        if not now < self.state["starting_balance"]:
            raise StepFailed(f"balance {now} USD was not charged (started at {self.state['starting_balance']})")
        return f"{body['balance_usd']} USD (charged {self.state['starting_balance'] - now} USD)"

    def rate_limit(self) -> str:
        """A 2-rpm key: the third call is 429 rate_limit_exceeded with Retry-After and the limit headers."""
        body = self.expect(self.call("POST", "/api/keys", {"name": "smoke-rpm", "rpm": 2},
                                     token=self.state["token"]), 201)
        self.state.setdefault("key_ids", []).append(body["api_key"]["id"])
        answers = [self.call("GET", "/v1/models", token=body["key"]) for _ in range(3)]
        if [answer.status for answer in answers[:2]] != [200, 200]:
            raise StepFailed(f"the first two calls of a 2-rpm key: {[_describe(a) for a in answers[:2]]}")
        limited = answers[2]
        code = (limited.json().get("error") or {}).get("code") if limited.status == 429 else None
        if code != "rate_limit_exceeded":
            raise StepFailed(f"the third call should be 429 rate_limit_exceeded, got {_describe(limited)}")
        for header in ("retry-after", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"):
            if header not in limited.headers:
                raise StepFailed(f"the 429 lacks {header}")
        return f"429 with Retry-After {limited.headers['retry-after']}"

    def cleanup(self) -> str:
        """Delete the keys; with an admin token disable the user; log out."""
        token = self.state["token"]
        for key_id in self.state.get("key_ids", []):
            self.expect(self.call("DELETE", f"/api/keys/{key_id}", token=token), 200)
        done = [f"{len(self.state.get('key_ids', []))} keys deleted"]
        if self.admin_token:
            self.expect(self.call("POST", f"/api/admin/users/{self.state['user_id']}/disable",
                                  token=self.admin_token), 200)
            done.append(f"user {self.state['email']} disabled")
        else:
            done.append(f"user {self.state['email']} left active (pass --admin-token to disable it)")
        self.call("POST", "/api/auth/logout", token=token)
        return "; ".join(done)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python3 -m gateway.smoke`."""
    parser = argparse.ArgumentParser(prog="privaterouter smoke", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The smoke test's options (shared by `privaterouter smoke` and `python3 -m gateway.smoke`)."""
    parser.add_argument("--url", required=True, help="the deployment's base URL, e.g. https://llm.example.com")
    parser.add_argument("--admin-token", help="an admin's session token: also disable the test user at the end")
    parser.add_argument("--skip-rate-limit", action="store_true", help="do not provoke a 429")


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the smoke test; 0 when every step passed, 1 otherwise."""
    return 1 if Smoke(args.url, args.admin_token, args.skip_rate_limit, out).run() else 0


if __name__ == "__main__":
    sys.exit(run(build_parser().parse_args()))
