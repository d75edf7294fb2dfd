"""gateway.middleware.root_path: which redirect locations get the prefix."""

from __future__ import annotations

import pytest

from gateway.middleware.root_path import with_prefix


@pytest.mark.parametrize("location, expected", [
    ("/login", "/llm/login"),
    ("/api/keys?x=1", "/llm/api/keys?x=1"),
    ("http://host:8080/dashboard", "http://host:8080/llm/dashboard"),
    ("/llm/login", "/llm/login"),  # already prefixed
    ("/llm", "/llm"),
    ("https://checkout.stripe.com/pay", "https://checkout.stripe.com/llm/pay"),  # caller filters hosts first
    ("//evil.example/x", "//evil.example/x"),
    ("relative/path", "relative/path"),
])
def test_with_prefix(location: str, expected: str) -> None:
    assert with_prefix(location, "/llm") == expected
