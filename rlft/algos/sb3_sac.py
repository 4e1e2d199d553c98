"""stable-baselines3 SAC checkpointed through rlft's modules (no pickle): one home for DSRL's SAC and the expert's.

SB3 keeps part of its training state outside ``model.policy`` (actor, critic, critic target): the
entropy coefficient ``log_ent_coef``, its counters and the replay buffer. :class:`SB3SACState` names
all of it as modules and optimizers for :func:`rlft.runtime.trainer.fit`; the replay is a
:class:`~rlft.algos.replay.Replay` that SB3 writes into directly. The counters are copied into the
model before each :meth:`SB3SACState.learn` and back after it, so after a resume the checkpointed
values win.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlft.algos.replay import Replay

DIAGNOSTICS = {"train/actor_loss": "loss/actor", "train/critic_loss": "loss/critic", "train/ent_coef": "sac/ent_coef"}


class SACCounters(nn.Module):
    """SB3's own counters, kept in checkpoints: transitions seen, gradient steps, episodes ended, log entropy coefficient."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("num_timesteps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("episode_num", torch.zeros((), dtype=torch.int64))
        self.register_buffer("log_ent_coef", torch.zeros(1))


class SB3SACState:
    """The checkpointable state of an SB3 ``SAC`` model (``ent_coef="auto"``) and its rollouts in blocks."""

    def __init__(self, model: Any):
        self.model = model
        self.replay = Replay.backing(model.replay_buffer)
        self.counters = SACCounters()
        self.pull()

    def modules(self) -> dict[str, nn.Module]:
        """``sac`` (actor, critic, critic target), ``replay``, ``counters``."""
        return {"sac": self.model.policy, "replay": self.replay, "counters": self.counters}

    def optimizers(self) -> dict[str, Any]:
        model = self.model
        return {"actor": model.actor.optimizer, "critic": model.critic.optimizer, "ent_coef": model.ent_coef_optimizer}

    def push(self) -> None:
        """Counters -> model (after a resume the checkpointed values replace the fresh model's)."""
        model, c = self.model, self.counters
        model.num_timesteps, model._n_updates, model._episode_num = int(c.num_timesteps), int(c.n_updates), int(c.episode_num)
        with torch.no_grad():
            model.log_ent_coef.copy_(c.log_ent_coef)

    def pull(self) -> None:
        """Model -> counters."""
        model, c = self.model, self.counters
        c.num_timesteps.fill_(model.num_timesteps)
        c.n_updates.fill_(model._n_updates)
        c.episode_num.fill_(model._episode_num)
        c.log_ent_coef.copy_(model.log_ent_coef.detach())

    def learn(self, transitions: int) -> dict[str, float]:
        """``transitions`` more env steps (of all sub-envs together) with SAC's updates; its last training diagnostics."""
        self.push()
        self.model.learn(transitions, reset_num_timesteps=False, log_interval=None)
        self.pull()
        logged = self.model.logger.name_to_value
        return {ours: float(logged[theirs]) for theirs, ours in DIAGNOSTICS.items() if theirs in logged}
