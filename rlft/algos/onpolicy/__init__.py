"""On-policy fine-tuning: rollout collection + GAE, chain PPO, and its providers (DPPO, ReinFlow, ResiP)."""
