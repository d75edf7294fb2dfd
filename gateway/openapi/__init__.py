"""The OpenAPI 3.1 document of the HTTP surface (`GET /openapi.json`) and its `/docs` page."""
