"""A tiny VLA with OpenVLA's loading, processor and forward contract, for tests and laptop runs."""

from .build import build_openvla_shaped, build_tiny_vla

__all__ = ["build_openvla_shaped", "build_tiny_vla"]
