"""Moved to ``removal.gateways``; this name still imports it, and ``.local`` too."""

from removal.gateways import Gateway, LocalGateway, gateway_for

__all__ = ["Gateway", "LocalGateway", "gateway_for"]
