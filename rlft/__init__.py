"""rlft: train diffusion and flow-matching robot policies from demonstrations, then fine-tune them with RL."""

__version__ = "0.1.0"
