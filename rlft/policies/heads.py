"""Generative heads: each wraps a backbone ``net(x, t, cond)`` and owns one training loss and one sampler.

All heads share a small interface used by :class:`rlft.policies.policy.Policy`:

* ``loss(x0, cond) -> [B]``        per-sample training loss on clean (normalized) action chunks x0 [B, H, A]
* ``time_grid(steps) -> [steps+1]`` the sampling times from noise to data
* ``transition(x, t, t_next, cond, stochastic) -> (mean, std)`` one sampling step; std [B, 1, 1] is
  the head's own noise (zero for deterministic steps and for every flow step)

Sampling, the chain view and log-probabilities are written once, in the Policy, on top of these.
Training losses draw their randomness through :mod:`rlft.policies.draws`, so a data-parallel run's ranks
together draw what one process draws for the whole batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rlft.policies import draws


class Head(nn.Module):
    """Base class: ``net`` is a backbone with ``n_times`` time inputs."""

    n_times = 1
    time_scale = 1000.0  # the backbone's time-embedding scale unless the config sets one

    def __init__(self, net: nn.Module, steps: int):
        super().__init__()
        self.net = net
        self.steps = steps  # default number of sampling steps

    def loss(self, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def time_grid(self, steps: int) -> torch.Tensor:
        raise NotImplementedError

    def transition(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor, stochastic: bool) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def default_stochastic(self) -> bool:
        """Whether :meth:`Policy.act` samples with the head's own noise (DDPM: yes; ODE samplers: no)."""
        return False


# ---- diffusion -------------------------------------------------------------------------------------
def cosine_alpha_bars(n: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: cumulative alphas [n], betas capped at 0.999."""
    x = torch.linspace(0, n, n + 1, dtype=torch.float64)
    f = torch.cos(((x / n) + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def vp_alpha_bars(n: int, beta_min: float = 0.1, beta_max: float = 10.0) -> torch.Tensor:
    """The discretised variance-preserving SDE schedule (DQL's, for few steps): cumulative alphas [n]."""
    i = torch.arange(1, n + 1, dtype=torch.float64)
    alphas = torch.exp(-beta_min / n - 0.5 * (beta_max - beta_min) * (2 * i - 1) / n**2)
    return torch.cumprod(alphas, 0)


SCHEDULES = {"cosine": cosine_alpha_bars, "vp": vp_alpha_bars}


class Diffusion(Head):
    """DDPM with epsilon prediction, trained on ``train_steps`` noise levels.

    Sampling uses the generalised DDIM step on any sub-grid of the training levels: ``eta = 1`` is
    DDPM's ancestral step (exactly, on the full grid), ``eta = 0`` deterministic DDIM. The predicted
    x0 is clipped to [-clip_x0, clip_x0] (the normalized action range) before each step.
    """

    def __init__(self, net: nn.Module, train_steps: int = 20, schedule: str = "cosine", steps: int = 20, eta: float = 1.0, clip_x0: float = 1.0):
        super().__init__(net, steps)
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown diffusion schedule '{schedule}'; choose one of: {', '.join(SCHEDULES)}")
        if not 1 <= steps <= train_steps:
            raise ValueError(f"diffusion sampling steps must be in 1..train_steps={train_steps} (got {steps})")
        self.train_steps = train_steps
        self.eta = eta
        self.clip_x0 = clip_x0
        # alpha_bar[k] for k = 0..T-1, and alpha_bar = 1 at "k = -1" (clean data), stored at index T.
        ab = SCHEDULES[schedule](train_steps)
        self.register_buffer("alpha_bar", torch.cat([ab, torch.ones(1, dtype=torch.float64)]).float(), persistent=False)

    @property
    def default_stochastic(self) -> bool:
        return self.eta > 0

    def _net_time(self, k: torch.Tensor, batch: int) -> torch.Tensor:
        return (k.float() / self.train_steps).expand(batch)

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, min_level: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Noise MSE per sample [B] at levels drawn uniformly from ``min_level``..T-1 (ADG's ambient DDPM trains on
        k >= k_a only); ``mask`` [B, H] keeps only those chunk steps in the mean (ADG's clean DDPM; 0 where none is kept)."""
        rows, total = draws.rows(x0.shape[0], x0.device)
        k = draws.at(lambda m: torch.randint(min_level, self.train_steps, (m,), device=x0.device), rows, total)
        ab = self.alpha_bar[k].view(-1, 1, 1)
        eps = draws.randn(x0.shape[0], x0.shape[1:], x0.device, x0.dtype)
        x_k = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        error = (self.net(x_k, k.float() / self.train_steps, cond) - eps) ** 2
        if mask is None:
            return error.mean((1, 2))
        mask = mask.to(error.dtype)
        return (error.mean(2) * mask).sum(1) / mask.sum(1).clamp(min=1)

    def predict_noise(self, x: torch.Tensor, level: int, cond: torch.Tensor) -> torch.Tensor:
        """The net's noise prediction for ``x`` read as a sample at training level ``level``."""
        return self.net(x, x.new_full((x.shape[0],), level / self.train_steps), cond)

    def time_grid(self, steps: int) -> torch.Tensor:
        """Evenly spaced training levels, noisiest first, ending at -1 (clean): e.g. T=20, 5 steps -> 19 15 11 7 3 -1."""
        if not 1 <= steps <= self.train_steps:
            raise ValueError(f"diffusion sampling steps must be in 1..{self.train_steps} (got {steps})")
        levels = torch.linspace(self.train_steps - 1, 0, steps).round().long()
        return torch.cat([levels, torch.tensor([-1])]).float()

    def transition(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor, stochastic: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # tensor indices (not Python ints) keep the step traceable for export; index -1 is the appended 1.0
        ab, ab_next = self.alpha_bar[t.long()], self.alpha_bar[t_next.long()]
        eps = self.net(x, self._net_time(t, x.shape[0]), cond)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        if self.clip_x0:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        eta = self.eta if stochastic else 0.0
        var = eta**2 * (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
        mean = ab_next.sqrt() * x0 + (1 - ab_next - var).clamp(min=0).sqrt() * eps
        return mean, var.sqrt().expand(x.shape[0], 1, 1)


# ---- flows -----------------------------------------------------------------------------------------
class RectifiedFlow(Head):
    """Rectified flow on the straight path x_t = (1 - t) x0 + t eps (t = 1 noise, t = 0 data).

    The net predicts the velocity v = eps - x0; sampling integrates from t = 1 to 0 with Euler steps.
    Training times: ``uniform``, ``logit_normal`` (``time_mean``, ``time_std``) or ``beta``
    (``beta_a``, ``beta_b``; the default 1.5, 1 puts more weight on noisy times, as pi0 does).
    """

    def __init__(
        self,
        net: nn.Module,
        steps: int = 10,
        time_sampling: str = "uniform",
        time_mean: float = 0.0,
        time_std: float = 1.0,
        beta_a: float = 1.5,
        beta_b: float = 1.0,
    ):
        super().__init__(net, steps)
        if time_sampling not in ("uniform", "logit_normal", "beta"):
            raise ValueError(f"unknown time_sampling '{time_sampling}'; choose uniform, logit_normal or beta")
        self.time_sampling = time_sampling
        self.time_mean, self.time_std = time_mean, time_std
        self.beta_a, self.beta_b = beta_a, beta_b

    def sample_times(self, n: int, device: torch.device) -> torch.Tensor:
        if self.time_sampling == "uniform":
            return torch.rand(n, device=device)
        if self.time_sampling == "logit_normal":
            return torch.sigmoid(self.time_mean + self.time_std * torch.randn(n, device=device))
        beta = torch.distributions.Beta(torch.tensor(self.beta_a, device=device), torch.tensor(self.beta_b, device=device))
        return beta.sample((n,))  # draws from torch's global RNG, which checkpoints capture

    def loss(self, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        rows, total = draws.rows(x0.shape[0], x0.device)
        t = draws.at(lambda m: self.sample_times(m, x0.device), rows, total)
        eps = draws.randn(x0.shape[0], x0.shape[1:], x0.device, x0.dtype)
        x_t = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * eps
        return ((self.net(x_t, t, cond) - (eps - x0)) ** 2).mean((1, 2))

    def time_grid(self, steps: int) -> torch.Tensor:
        if steps < 1:
            raise ValueError(f"flow sampling steps must be >= 1 (got {steps})")
        return torch.linspace(1, 0, steps + 1)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The velocity used for the step t -> t_next (x_next = x - (t - t_next) * velocity)."""
        return self.net(x, t.expand(x.shape[0]), cond)

    def transition(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor, stochastic: bool) -> tuple[torch.Tensor, torch.Tensor]:
        mean = x - (t - t_next) * self.velocity(x, t, t_next, cond)
        return mean, x.new_zeros(x.shape[0], 1, 1)


class Shortcut(RectifiedFlow):
    """Shortcut model (Frans et al. 2024): the net also sees the step size d and predicts the step's slope.

    A ``bootstrap_fraction`` of each batch trains self-consistency: one step of size 2d should equal two
    steps of size d (target built without gradient); the rest is plain flow matching at d = 0.
    Step sizes are powers of two down to 1 / ``max_steps``, whose two half steps are flow (d = 0) steps.
    """

    n_times = 2

    def __init__(self, net: nn.Module, steps: int = 4, bootstrap_fraction: float = 0.25, max_steps: int = 128, **flow_kwargs):
        super().__init__(net, steps, **flow_kwargs)
        if max_steps < 2 or max_steps & (max_steps - 1):
            raise ValueError(f"shortcut max_steps must be a power of two >= 2 (got {max_steps})")
        self.bootstrap_fraction = bootstrap_fraction
        self.levels = int(math.log2(max_steps))

    def loss(self, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, device = x0.shape[0], x0.device
        rows, total = draws.rows(b, device)
        index = torch.arange(b, device=device) if rows is None else rows
        n_boot = int(round(total * self.bootstrap_fraction))  # the first n_boot rows of the (global) batch
        eps = draws.randn(b, x0.shape[1:], device, x0.dtype)
        boot = index < n_boot
        flow_at, boot_at = (None, None) if rows is None else (index[~boot] - n_boot, index[boot])
        # flow-matching part, d = 0
        t = draws.at(lambda m: self.sample_times(m, device), flow_at, total - n_boot)
        x_t = (1 - t.view(-1, 1, 1)) * x0[~boot] + t.view(-1, 1, 1) * eps[~boot]
        pred = self.net(x_t, torch.stack([t, torch.zeros_like(t)], -1), cond[~boot])
        out = x0.new_empty(b)
        out[~boot] = ((pred - (eps[~boot] - x0[~boot])) ** 2).mean((1, 2))
        if n_boot == 0:
            return out
        # self-consistency part: 2d ∈ {1, 1/2, ..., 2/max_steps}; t on the grid of 2d so both half steps stay in [0, 1]
        level, u = draws.at(lambda m: (torch.randint(1, self.levels + 1, (m,), device=device), torch.rand(m, device=device)), boot_at, n_boot)
        if not bool(boot.any()):  # this rank holds no bootstrap row (the draws above keep the ranks' RNGs together)
            return out
        d = 0.5 ** level.float()
        t = 2 * d * torch.floor(u / (2 * d) + 1).clamp(max=1 / (2 * d))
        tv = t.view(-1, 1, 1)
        x_t = (1 - tv) * x0[boot] + tv * eps[boot]
        c = cond[boot]
        # the finest level's two steps use the flow velocity itself (d = 0), tying every level to flow matching
        d_query = torch.where(d <= 1.0 / 2**self.levels, torch.zeros_like(d), d)
        with torch.no_grad():
            s1 = self.net(x_t, torch.stack([t, d_query], -1), c)
            s2 = self.net(x_t - d.view(-1, 1, 1) * s1, torch.stack([t - d, d_query], -1), c)
            target = (s1 + s2) / 2
        out[boot] = ((self.net(x_t, torch.stack([t, 2 * d], -1), c) - target) ** 2).mean((1, 2))
        return out

    def velocity(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        times = torch.stack([t, t - t_next]).expand(x.shape[0], 2)
        return self.net(x, times, cond)


class MeanFlow(RectifiedFlow):
    """Mean flow (Geng et al. 2025), OFQL's actor: the net predicts the average velocity u(z, r, t) over [r, t].

    Its time inputs are (t, t - r). The target is u_tgt = v - (t - r) (v . d_z u + d_t u), with the total
    derivative from one Jacobian-vector product; a ``p_equal`` share of samples has r = t (plain flow
    matching). One step from noise: x0 = eps - u(eps, 0, 1).

    The per-sample squared error is weighted by 1 / (error + 1e-3) ** ``adaptive_p`` (the paper's adaptive
    loss; p = 1 its default, p = 0 plain MSE): without it training diverges on sharp data. The time
    embedding uses scale 1, since d_t u enters the target and a 1000x time scale multiplies it.
    """

    n_times = 2
    time_scale = 1.0

    def __init__(
        self,
        net: nn.Module,
        steps: int = 1,
        p_equal: float = 0.5,
        adaptive_p: float = 1.0,
        time_sampling: str = "logit_normal",
        time_mean: float = -0.4,
        time_std: float = 1.0,
        **flow_kwargs,
    ):
        super().__init__(net, steps, time_sampling=time_sampling, time_mean=time_mean, time_std=time_std, **flow_kwargs)
        self.p_equal = p_equal
        self.adaptive_p = adaptive_p

    def sample_time_pairs(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, r) with r <= t; r = t for a ``p_equal`` share."""
        a, b = self.sample_times(n, device), self.sample_times(n, device)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        r = torch.where(torch.rand(n, device=device) < self.p_equal, t, r)
        return t, r

    def average_velocity(self, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(z, torch.stack([t, t - r], -1), cond)

    def target(self, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor, v: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, u_tgt): the prediction (with gradient) and its detached JVP-based target."""
        u, du_dt = torch.func.jvp(lambda z_, t_, r_: self.average_velocity(z_, t_, r_, cond), (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
        return u, (v - (t - r).view(-1, 1, 1) * du_dt).detach()

    def loss(self, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        rows, total = draws.rows(x0.shape[0], x0.device)
        t, r = draws.at(lambda m: self.sample_time_pairs(m, x0.device), rows, total)
        eps = draws.randn(x0.shape[0], x0.shape[1:], x0.device, x0.dtype)
        z = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * eps
        u, u_tgt = self.target(z, t, r, eps - x0, cond)
        error = ((u - u_tgt) ** 2).mean((1, 2))
        return error / (error.detach() + 1e-3) ** self.adaptive_p if self.adaptive_p else error

    def velocity(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.average_velocity(x, t.expand(x.shape[0]), t_next.expand(x.shape[0]), cond)


HEADS = {"diffusion": Diffusion, "flow": RectifiedFlow, "shortcut": Shortcut, "meanflow": MeanFlow}
