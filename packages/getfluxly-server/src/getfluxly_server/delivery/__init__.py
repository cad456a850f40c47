"""Delivery adapters: one small module per provider behind :class:`base.ProviderClient`."""
