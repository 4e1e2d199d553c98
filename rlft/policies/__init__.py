"""Generative policies: backbones, observation encoders, generative heads, the chain view, the Policy."""

from rlft.policies.chain import Chain, ChainNoise, StdFloor
from rlft.policies.policy import Policy

__all__ = ["Chain", "ChainNoise", "Policy", "StdFloor"]
