"""Any family the registry names that has no module of its own.

Tools are offered (Ollama itself refuses them for a model without the capability); images and
reasoning are refused, because Ollama would silently drop images and we cannot tell whether the
model thinks.
"""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="default")
