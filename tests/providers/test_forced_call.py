"""providers/openai/forced_call.py: the format schema of a forced call and reading the call back."""

from __future__ import annotations

from typing import Any

import pytest

from providers.errors import UpstreamProtocolError
from providers.openai.forced_call import ForcedCall


def tool(name: str, **properties: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": properties, "required": list(properties)}}}


ONE = ForcedCall([tool("get_time")])
TWO = ForcedCall([tool("get_time"), tool("get_weather", city={"type": "string"})])


def test_one_tool_uses_its_parameters_as_the_schema() -> None:
    assert ONE.schema() == {"type": "object", "properties": {}, "required": []}


def test_several_tools_are_any_of_name_and_arguments() -> None:
    options = TWO.schema()["anyOf"]
    assert [o["properties"]["name"]["const"] for o in options] == ["get_time", "get_weather"]
    assert options[1]["properties"]["arguments"]["required"] == ["city"] and options[1]["required"] == [
        "name", "arguments"]


def test_one_tool_call_is_the_whole_output() -> None:
    [call] = ONE.calls(' {"tz": "UTC"} ', truncated=False)
    assert call["function"] == {"name": "get_time", "arguments": '{"tz": "UTC"}'} and call["id"].startswith("call_")


def test_several_tools_call_names_its_tool() -> None:
    [call] = TWO.calls('{"name": "get_weather", "arguments": {"city": "Paris"}}', truncated=False)
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


def test_a_cut_off_call_is_returned_as_far_as_it_got_for_one_tool_and_not_at_all_for_several() -> None:
    assert ONE.calls('{"tz": "UT', truncated=True)[0]["function"]["arguments"] == '{"tz": "UT'
    assert TWO.calls('{"name": "get_wea', truncated=True) == []


@pytest.mark.parametrize("forced,text", [(ONE, "OK."), (ONE, "[1]"), (TWO, '{"name": "nope", "arguments": {}}'),
                                         (TWO, '{"name": "get_time"}')])
def test_output_that_is_no_call_is_the_model_servers_fault(forced: ForcedCall, text: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        forced.calls(text, truncated=False)
