"""On-policy fine-tuning: rollout collection + GAE, chain PPO, and the chain providers (DPPO, ReinFlow)."""
