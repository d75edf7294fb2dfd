from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.registry import Registry, RegistryError, RegistryHolder, load, parse
from tests.conftest import MODELS_FILE

TEXT = MODELS_FILE.read_text()


def test_shipped_registry_carries_seed_models_and_plans(registry: Registry) -> None:
    assert list(registry.models) == ["privaterouter/fast", "privaterouter/qwen-fast", "privaterouter/qwen-pro",
                                     "privaterouter/deepseek-code", "privaterouter/deepseek-reason",
                                     "privaterouter/embed"]
    assert registry.models["privaterouter/qwen-pro"].tag == "qwen3.6:latest"
    assert str(registry.models["privaterouter/deepseek-code"].output_price) == "1.800000"
    assert registry.models["privaterouter/embed"].dimensions == 768
    free = registry.plans["free"]
    assert (str(free.included_credits_usd), free.rpm, free.models) == ("1.00", 20,
                                                                     ("privaterouter/fast", "privaterouter/embed"))
    assert registry.plans["team"].models is None and registry.plans["team"].rpm == 1000
    assert registry.nodes["local"].url == "http://127.0.0.1:11434"


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("rpm: 60", "rpn: 60", r"models.yaml:\d+: plans\[1\]\.rpn: unknown key"),
    ("- name: starter", "- name: free", r"plans\[1\]\.name: duplicate plan name 'free'"),
    ("[privaterouter/fast, privaterouter/embed]", "[privaterouter/fast, privaterouter/nope]",
     r"plans\[0\]\.models\[1\]: unknown model 'privaterouter/nope'"),
    ('output_price: "0.300000"', 'output_price: "-0.3"', r"models\[0\]\.output_price: must not be negative"),
    ('output_price: "0.300000"', 'output_price: "cheap"', r"models\[0\]\.output_price: must be a decimal"),
    ("kind: embedding", "kind: vector", r"models\[5\]\.kind: must be one of chat, embedding"),
    ("kind: embedding", "kind: chat", r"models\[5\]\.kind: family 'embedding' serves embedding models, not chat"),
    ("    family: gemma\n", "    family: gemma\n    nodes: [gpu-9]\n",
     r"models\[0\]\.nodes\[0\]: unknown node 'gpu-9'"),
    ("context: 8192\n    input_price: \"0.100000\"", "context: lots\n    input_price: \"0.100000\"",
     r"models\[0\]\.context: must be an integer"),
    ("url: ${OLLAMA_URL:-http://127.0.0.1:11434}", "url: ftp://x", r"nodes\[0\]\.url: must be an http\(s\) URL"),
    ("  - name: privaterouter/fast\n", "  - name: privaterouter/fast\n    name: again\n", r"duplicate key"),
])
def test_invalid_registry_is_refused_with_line_and_key_path(old: str, new: str, expected: str) -> None:
    assert old in TEXT
    with pytest.raises(RegistryError, match=expected):
        parse(TEXT.replace(old, new, 1), "models.yaml")


def test_error_names_the_right_line() -> None:
    bad = TEXT.replace("rpm: 60", "rpn: 60")
    line = next(number for number, text in enumerate(bad.splitlines(), start=1) if "rpn: 60" in text)
    with pytest.raises(RegistryError, match=f"^models.yaml:{line}: "):
        parse(bad, "models.yaml")


def test_unquoted_decimal_prices_are_exact() -> None:
    registry = parse(TEXT.replace('"0.100000"', "0.1", 1))
    assert str(registry.models["privaterouter/fast"].input_price) == "0.1"
    assert registry.models["privaterouter/fast"].input_pico_per_token == 100_000


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(RegistryError, match=r"models.yaml:\d+: not valid YAML"):
        parse("nodes: [\n", "models.yaml")


def test_free_plan_is_required() -> None:
    with pytest.raises(RegistryError, match="a plan named 'free' is required"):
        parse(TEXT.replace("- name: free", "- name: gratis"))


def test_reload_swaps_only_valid_files_and_logs_a_diff(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(TEXT)
    holder = RegistryHolder(path)
    seen: list[Registry] = []
    holder.on_swap(seen.append)
    original = holder.current

    path.write_text(TEXT.replace("rpm: 20", "rpm: 25"))
    with caplog.at_level(logging.INFO, logger="pr.registry"):
        diff = holder.reload()
    assert "plans ~free" in diff and diff in caplog.text
    assert holder.current.plans["free"].rpm == 25 and seen == [holder.current]

    good = holder.current
    path.write_text(TEXT.replace("rpm: 20", "rpm: twenty"))
    with pytest.raises(RegistryError):
        holder.reload()
    assert holder.current is good and original.plans["free"].rpm == 20


def test_diff_reports_added_and_removed() -> None:
    old = parse(TEXT)
    new = parse(TEXT.replace("  - name: team\n", "  - name: enterprise\n"))
    assert "plans +enterprise -team" in old.diff(new)
    assert old.diff(parse(TEXT)).endswith("no changes")


def test_missing_file_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        load(tmp_path / "absent.yaml")


NODE = "  - name: local\n    url: http://127.0.0.1:11434\n"


def _with_node(node_yaml: str) -> str:
    start, end = TEXT.index("nodes:\n"), TEXT.index("models:\n")
    return TEXT[:start] + "nodes:\n" + node_yaml + "\n" + TEXT[end:]


def test_node_headers_take_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_TOKEN", "s3cret")
    registry = parse(_with_node("  - name: local\n    url: https://gpu.example:443\n    headers:\n"
                                "      Authorization: Bearer ${NODE_TOKEN}\n      X-Tenant: team-a\n"))
    assert registry.nodes["local"].headers == (("Authorization", "Bearer s3cret"), ("X-Tenant", "team-a"))
    monkeypatch.delenv("NODE_TOKEN")
    with pytest.raises(RegistryError, match=r"nodes\[0\]\.headers\.Authorization: environment variable NODE_TOKEN "
                                            r"is not set"):
        parse(_with_node("  - name: local\n    url: https://gpu.example\n    headers:\n"
                         "      Authorization: Bearer ${NODE_TOKEN}\n"))


def test_node_ca_file_must_exist_and_belong_to_an_https_node(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    registry = parse(_with_node(f"  - name: local\n    url: https://gpu.example\n    ca_file: {pem}\n"))
    assert registry.nodes["local"].ca_file == str(pem)
    with pytest.raises(RegistryError, match=r"nodes\[0\]\.ca_file: must be the path of a PEM file, on an https"):
        parse(_with_node(f"  - name: local\n    url: http://gpu.example\n    ca_file: {pem}\n"))
    with pytest.raises(RegistryError, match=r"nodes\[0\]\.ca_file: no such file"):
        parse(_with_node(f"  - name: local\n    url: https://gpu.example\n    ca_file: {tmp_path / 'nope.pem'}\n"))
    with pytest.raises(RegistryError, match=r"nodes\[0\]\.headers\.X-Bad: must not contain line breaks"):
        parse(_with_node("  - name: local\n    url: https://gpu.example\n    headers:\n      X-Bad: \"a\\r\\nb\"\n"))


def test_node_url_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_URL", raising=False)
    assert parse(TEXT).nodes["local"].url == "http://127.0.0.1:11434"  # the shipped default
    monkeypatch.setenv("OLLAMA_URL", "http://ollama:11434/")
    assert parse(TEXT).nodes["local"].url == "http://ollama:11434"
    monkeypatch.setenv("OLLAMA_URL", "ollama:11434")
    with pytest.raises(RegistryError, match=r"nodes\[0\]\.url: must be an http\(s\) URL"):
        parse(TEXT)
