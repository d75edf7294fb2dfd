"""The Stripe SDK client the gateway uses: async (the SDK's httpx transport), at STRIPE_API_BASE."""

from __future__ import annotations

import stripe

from gateway.errors import GatewayError
from gateway.settings import Settings


def client_for(settings: Settings, http: stripe.HTTPXClient) -> stripe.StripeClient:
    """A StripeClient on `http` (close it with `await http.close_async()` after use); retries twice with the
    request's idempotency key."""
    assert settings.stripe_secret_key is not None
    return stripe.StripeClient(settings.stripe_secret_key, base_addresses={"api": settings.stripe_api_base},
                               http_client=http, max_network_retries=2)


def provider_error() -> GatewayError:
    """502 `payment_provider_error`: Stripe refused or could not be reached; nothing was charged."""
    return GatewayError(502, "payment_provider_error", "The payment provider could not start a checkout; "
                        "nothing was charged. Try again in a moment.", type="upstream_error")
