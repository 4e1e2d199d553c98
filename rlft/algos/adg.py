"""ADG (Liu et al. 2025, arXiv 2505.23871): ambient-diffusion-guided recovery of a corrupted dataset.

A window z_t holds the steps t - H .. t + H of an episode (``elements`` of each step, (s, a, r) by default,
each dimension standardised over the dataset; steps past an episode's edge repeat its first or last step).

1. An *ambient* DDPM (:class:`~rlft.policies.heads.Diffusion` on a residual MLP, K levels) learns the windows
   at noise levels k >= k_a only: there the corruption is drowned by the diffusion noise, so the corrupted part
   of the data barely biases it.
2. Detection: the score of step t is ||eps(z_t, k_a)[centre]||^2, the noise the ambient model sees in the
   window read as a sample at level k_a; scores are rescaled to [0, 1] over the dataset (min-max) and steps
   above ``threshold`` are flagged.
3. A second DDPM learns all levels from the same windows with the flagged steps masked out of its loss.
4. Repair: each flagged step's window is noised to level k_a and denoised by the second DDPM (ancestral DDPM
   steps k_a .. 0); only the centre step replaces the data. Everything else is copied as it is.

Both DDPMs train in one run folder through :func:`rlft.runtime.trainer.fit` (steps 1..S the ambient one,
S+1..2S the clean one; flags are recomputed from the ambient weights on resume, deterministically), so a
run resumes exactly. The repaired store carries a ``repair`` record, and, when the input records its true
corruption (``rlft data corrupt``), the detection's precision and recall.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from rlft.datasets.corrupt import RECORD, detection, state_keys
from rlft.datasets.store import EpisodeStore, write_episodes
from rlft.errors import DatasetError
from rlft.policies.backbones import ResidualMLP
from rlft.policies.heads import Diffusion
from rlft.runtime.run import Run
from rlft.runtime.seeding import seed_everything
from rlft.runtime.trainer import fit

PLOTTED = (("ambient_loss",), ("clean_loss",))  # learning_curve.png panels
_CHUNK = 4096  # windows scored or repaired at once


def step_matrix(store: EpisodeStore, elements: list[str]) -> tuple[np.ndarray, dict[str, slice]]:
    """The per-step values a window holds, [N, D] float64, and the columns of each store key in it."""
    keys = [k for e in elements for k in (state_keys(store) if e == "obs" else [e])]
    columns, parts, at = {}, [], 0
    for key in keys:
        values = store[key].reshape(store.n_steps, -1).astype(np.float64)
        columns[key] = slice(at, at + values.shape[1])
        parts.append(values)
        at += values.shape[1]
    return np.concatenate(parts, 1), columns


def window_rows(store: EpisodeStore, horizon: int) -> np.ndarray:
    """[N, 2 horizon + 1]: the store rows of the window centred at each step, clipped to its episode (edge repetition)."""
    lengths = np.diff(np.concatenate([[0], store.episode_ends]))
    start, end = np.repeat(store.episode_starts, lengths), np.repeat(store.episode_ends, lengths)
    t = np.arange(store.n_steps)[:, None] + np.arange(-horizon, horizon + 1)
    return np.clip(t, start[:, None], end[:, None] - 1)


def build_ddpm(dim: int, width: int, adg: Any) -> Diffusion:
    """A DDPM over windows [B, width, dim], unconditional, without x0 clipping (the data are standardised, not bounded)."""
    net = ResidualMLP(dim, width, cond_dim=0, **dict(adg.backbone))
    return Diffusion(net, train_steps=adg.diffusion_steps, schedule=adg.schedule, steps=adg.diffusion_steps, eta=1.0, clip_x0=0.0)


@torch.no_grad()
def scores(model: Diffusion, z: np.ndarray, rows: np.ndarray, level: int) -> np.ndarray:
    """||eps(window, level)[centre]||^2 per window (``rows`` [N, W] into the standardised steps ``z``), [N]."""
    model.eval()
    device, centre = model.alpha_bar.device, rows.shape[1] // 2
    out = []
    for a in range(0, len(rows), _CHUNK):
        x = torch.from_numpy(z[rows[a : a + _CHUNK]].astype(np.float32)).to(device)
        eps = model.predict_noise(x, level, x.new_zeros(len(x), 0))
        out.append((eps[:, centre] ** 2).sum(1).double().cpu().numpy())
    return np.concatenate(out)


def rescale(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (all zeros if every value is the same)."""
    spread = values.max() - values.min()
    return (values - values.min()) / spread if spread > 0 else np.zeros_like(values)


@torch.no_grad()
def denoise_centres(model: Diffusion, z: np.ndarray, rows: np.ndarray, level: int, generator: torch.Generator) -> np.ndarray:
    """The centre steps of the windows ``rows`` after noising them to ``level`` and DDPM-denoising back to data, [n, D]."""
    model.eval()
    device, centre = model.alpha_bar.device, rows.shape[1] // 2
    out = []
    ab = model.alpha_bar[level]
    for a in range(0, len(rows), _CHUNK):
        x0 = torch.from_numpy(z[rows[a : a + _CHUNK]].astype(np.float32)).to(device)
        cond = x0.new_zeros(len(x0), 0)
        x = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(x0.shape, generator=generator).to(device)
        for k in range(level, -1, -1):
            mean, std = model.transition(x, torch.tensor(float(k), device=device), torch.tensor(float(k - 1), device=device), cond, stochastic=True)
            x = mean + std * torch.randn(x.shape, generator=generator).to(device)
        out.append(x[:, centre].double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, z.shape[1]))


def check(cfg: DictConfig) -> EpisodeStore:
    """The input store exists, is intact and holds what the windows need (before anything is written)."""
    if not cfg.src or not cfg.out:
        raise DatasetError("repair needs the input store and --out")
    store = EpisodeStore(cfg.src)
    if store.has_checksums:
        store.verify()
    state_keys(store)
    return store


def repair(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """Train both DDPMs of ``cfg.adg`` on ``cfg.src``, flag and repair it into ``cfg.out``; returns the summary."""
    adg, steps = cfg.adg, cfg.train.steps
    rng = seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    store = EpisodeStore(cfg.src)  # checked by check() before the run folder was written
    raw, columns = step_matrix(store, list(adg.elements))
    mean, std = raw.mean(0), raw.std(0)
    std = np.where(std < 1e-6, 1.0, std)
    z = (raw - mean) / std
    rows = window_rows(store, adg.horizon)
    width = rows.shape[1]
    ambient, clean = build_ddpm(z.shape[1], width, adg).to(device), build_ddpm(z.shape[1], width, adg).to(device)
    opts = {"ambient_opt": torch.optim.Adam(ambient.parameters(), lr=adg.lr), "clean_opt": torch.optim.Adam(clean.parameters(), lr=adg.lr)}
    state: dict[str, np.ndarray] = {}
    truth = store.meta.get(RECORD)

    def flags() -> np.ndarray:
        """The flagged steps [N] bool, from the ambient model's scores (computed once; again after a resume)."""
        if "flagged" not in state:
            state["score"] = rescale(scores(ambient, z, rows, adg.ambient_level))
            state["flagged"] = state["score"] > adg.threshold
        return state["flagged"]

    def update(step: int) -> dict[str, float]:
        idx = rows[rng.integers(0, len(rows), size=cfg.train.batch_size)]
        x0 = torch.from_numpy(z[idx].astype(np.float32)).to(device)
        cond = x0.new_zeros(len(x0), 0)
        if step <= steps:
            name, model = "ambient", ambient
            loss = model.train().loss(x0, cond, min_level=adg.ambient_level).mean()
        else:
            name, model = "clean", clean
            keep = torch.from_numpy(~flags()[idx]).to(device)
            loss = model.train().loss(x0, cond, mask=keep).mean()
        opts[f"{name}_opt"].zero_grad(set_to_none=True)
        loss.backward()
        opts[f"{name}_opt"].step()
        metrics = {f"{name}_loss": loss.item()}
        if step == steps + 1:
            flagged = flags()
            metrics["flagged_fraction"] = float(flagged.mean())
            if truth is not None:
                found = detection(truth, np.flatnonzero(flagged))
                metrics |= {k: float(found[k]) for k in ("precision", "recall") if found[k] is not None}
        return metrics

    fit(
        run,
        update,
        2 * steps,
        modules={"ambient": ambient, "clean": clean},
        optimizers=opts,
        generators={"data": rng},
        log_every=cfg.train.log_every,
        checkpoint_every=cfg.train.checkpoint_every,
        desc="repair adg",
        plot=PLOTTED,
    )
    flagged = np.flatnonzero(flags())
    generator = torch.Generator().manual_seed(cfg.seed)
    fixed = denoise_centres(clean, z, rows[flagged], adg.ambient_level, generator) * std + mean
    data = {k: store[k].copy() for k in store.keys}
    for key, cols in columns.items():
        data[key][flagged] = fixed[:, cols].reshape(len(flagged), *store.keys[key]).astype(data[key].dtype)
    summary: dict[str, Any] = {"path": str(cfg.out), "run": str(run.folder), "steps": int(store.n_steps), "flagged": int(len(flagged))}
    summary["flagged_fraction"] = len(flagged) / store.n_steps
    if truth is not None:
        summary["detection"] = detection(truth, flagged)
    record = {"method": "adg", "run": str(run.folder), "threshold": float(adg.threshold), "elements": list(adg.elements), "rows": flagged.tolist()}
    record |= {k: summary[k] for k in ("flagged", "flagged_fraction", "detection") if k in summary}
    meta = {k: v for k, v in store.meta.items() if k != "stats"} | {"repair": record, "repaired_from": str(store.path)}
    write_episodes(Path(cfg.out), data, store.episode_ends, meta)
    return summary
