"""The gateway-facing API: ids, output limits and endpoint dispatch."""

from __future__ import annotations

import pytest

from providers.base import ENDPOINTS, PreparedRequest, Usage, new_response_id, prepare
from providers.errors import InvalidRequest
from tests.providers.translate_helpers import chat_request, target


@pytest.mark.parametrize("endpoint,prefix", [("chat.completions", "chatcmpl-"), ("completions", "cmpl-"),
                                             ("embeddings", "embd-"), ("responses", "resp_")])
def test_new_response_id_prefix_and_uniqueness(endpoint: str, prefix: str) -> None:
    ids = {new_response_id(endpoint) for _ in range(100)}  # type: ignore[arg-type]
    assert len(ids) == 100 and all(i.startswith(prefix) and len(i) == len(prefix) + 32 for i in ids)


def test_every_endpoint_has_a_codec() -> None:
    from providers.openai.codecs import CODECS

    assert set(CODECS) == set(ENDPOINTS)


def test_unknown_endpoint_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        prepare("images", {}, target())  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [[], "text", None, 3])
def test_a_body_that_is_not_an_object_is_refused(body: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare("chat.completions", body, target())  # type: ignore[arg-type]
    assert info.value.param is None


def prepared(**kw: object) -> PreparedRequest:
    return prepare("chat.completions", chat_request(**kw), target())


def test_limit_output_sets_num_predict_when_there_is_none() -> None:
    prep = prepared()
    prep.limit_output(100)
    assert prep.body["options"]["num_predict"] == 100 and prep.max_output_tokens is None


def test_limit_output_lowers_but_never_raises() -> None:
    prep = prepared(max_tokens=50)
    prep.limit_output(80)
    assert prep.body["options"]["num_predict"] == 50
    prep.limit_output(20)
    assert prep.body["options"]["num_predict"] == 20 and prep.max_output_tokens == 50


def test_limit_output_replaces_unlimited() -> None:
    prep = prepared()
    prep.body["options"]["num_predict"] = -1
    prep.limit_output(7)
    assert prep.body["options"]["num_predict"] == 7


def test_limit_output_creates_options_if_missing() -> None:
    prep = PreparedRequest("completions", "/api/generate", {"prompt": "x"}, False, 1, None, False)
    prep.limit_output(3)
    assert prep.body["options"] == {"num_predict": 3}


def test_limit_output_refuses_zero() -> None:
    with pytest.raises(ValueError):
        prepared().limit_output(0)


def test_usage_total() -> None:
    assert Usage(3, 4, estimated=False).total_tokens == 7
