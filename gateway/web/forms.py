"""Reading HTML form posts (application/x-www-form-urlencoded) without a multipart dependency.

Starlette's `request.form()` needs python-multipart; our forms are all urlencoded, which the
standard library parses. Field errors are rendered next to their field by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.requests import Request

from gateway.errors import GatewayError

MAX_FIELDS = 200


@dataclass
class Form:
    """The submitted fields (a name may repeat, e.g. checkboxes) and the errors to show beside them."""

    values: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        found = self.values.get(name)
        return found[0] if found else default

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, []))

    def fail(self, error: GatewayError, fields: tuple[str, ...] = ()) -> None:
        """Record an error beside its field when the error names one of `fields`, else for the whole form."""
        name = error.param if error.param in fields else "_form"
        self.errors[name or "_form"] = error.message


async def read_form(request: Request) -> Form:
    """The urlencoded body as a Form; an unreadable body is an empty form (its checks then fail)."""
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return Form()
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value.replace("\x00", ""))
    return Form(values)


def form_int(value: str) -> int | str:
    """A form's whole number as an int; anything else as given, for the domain check to refuse by name."""
    text = value.strip()
    return int(text) if text.isdigit() and len(text) < 10 else text
