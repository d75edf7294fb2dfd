"""Outgoing email over SMTP (stdlib `smtplib`, run in a worker thread so the event loop never blocks).

Disabled when SMTP_HOST is unset: `Mailer.from_settings` then returns None and the flows that need
mail answer 503 `email_disabled`. Addresses and bodies are never logged (they carry tokens).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from gateway.errors import GatewayError
from gateway.settings import Settings

log = logging.getLogger("pr.mail")
TIMEOUT_SECONDS = 20


def email_disabled(what: str) -> GatewayError:
    return GatewayError(503, "email_disabled", f"{what} needs email, and this server has none configured "
                        "(SMTP_HOST); ask an administrator.", type="server_error")


@dataclass(frozen=True)
class Mailer:
    host: str
    port: int
    security: str  # starttls | tls | none
    username: str | None
    password: str | None
    sender: str
    public_base_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer | None:
        if not settings.smtp_host or not settings.smtp_from or not settings.public_base_url:
            return None
        return cls(settings.smtp_host, settings.smtp_port, settings.smtp_security, settings.smtp_username,
                   settings.smtp_password, settings.smtp_from, settings.public_base_url)

    def link(self, path: str) -> str:
        """An absolute link to this gateway (PUBLIC_BASE_URL + path)."""
        return self.public_base_url + path

    async def send(self, to: str, subject: str, text: str) -> None:
        """Deliver one plain-text message; raises OSError / smtplib.SMTPException on failure."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        await asyncio.to_thread(self._deliver, message)

    def _deliver(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=TIMEOUT_SECONDS, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_SECONDS)
        with smtp:
            if self.security == "starttls":
                smtp.starttls(context=context)
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)

    async def send_quietly(self, to: str, subject: str, text: str) -> bool:
        """`send`, logging (without the address) instead of raising: for mail after the answer is sent."""
        try:
            await self.send(to, subject, text)
            return True
        except (OSError, smtplib.SMTPException) as exc:
            log.error("sending '%s' failed: %s", subject, type(exc).__name__)
            return False
