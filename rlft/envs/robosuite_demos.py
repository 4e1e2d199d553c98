"""Scripted demonstrators for the robosuite tasks: waypoints on the object's pose, driven through OSC_POSE deltas.

robomimic's human demonstrations cannot be downloaded here, so ``rlft collect env=lift demos.n=200
demos.quality=mixed`` records these instead. Each episode draws an operator skill, as robomimic's multi-human
(MH) data mixes "better", "okay" and "worse" operators: the skill sets the action noise, how fast the arm is
driven toward the waypoint, how far the grasp point misses the object's centre and how often the operator
pauses. ``quality``: ``expert`` (better only), ``mixed`` (the three in equal parts) or ``worse``.

The demonstrator reads only the flat observation (:data:`rlft.envs.robosuite_tasks.OBS_KEYS`): end-effector
position [0:3] and the object's position inside ``object-state``. Phases per sub-env:
approach above the object, descend, close the gripper, lift (lift: success ends the episode there); can: carry
above its bin, lower, release, retreat. A grasp that slips sends the sub-env back to the approach.
"""

from __future__ import annotations

import numpy as np

from rlft.errors import ConfigError

# operator skill: action noise std, fraction of the way to the waypoint commanded per step (1 = full speed),
# grasp-point error (m, per episode), probability of a paused step
SKILLS = {
    "better": {"noise": 0.05, "gain": 1.0, "offset": 0.002, "pause": 0.0},
    "okay": {"noise": 0.15, "gain": 0.6, "offset": 0.006, "pause": 0.05},
    "worse": {"noise": 0.3, "gain": 0.35, "offset": 0.012, "pause": 0.15},
}
QUALITIES = {"expert": ("better",), "mixed": ("better", "okay", "worse"), "worse": ("worse",)}
# where the object's position sits in the flat observation (9 robot numbers, then robosuite's object-state)
OBJECT_POS = {"lift": slice(9, 12), "can": slice(16, 19)}
CAN_BIN = np.array([0.1975, 0.4025, 0.8])  # PickPlaceCan's target bin centre for the can (robosuite's bin layout)
HOVER, CARRY_Z, RELEASE_Z = 0.08, 1.02, 0.95
APPROACH, DESCEND, GRASP, LIFT, CARRY, LOWER, RELEASE, RETREAT = range(8)


class PickDemonstrator:
    """A phase machine per sub-env for ``lift`` or ``can``; call it as (obs [N, D], rng, index [N]) -> actions [N, 7]."""

    def __init__(self, task: str, quality: str = "mixed"):
        task = task.removesuffix("_img")  # the image task's state and object keys are the state task's observation
        if task not in OBJECT_POS:
            raise ConfigError(f"no scripted demonstrator for {task}; the robosuite tasks with one: {', '.join(OBJECT_POS)}")
        if quality not in QUALITIES:
            raise ConfigError(f"demos.quality={quality}: choose one of {', '.join(QUALITIES)}")
        self.task, self.skills = task, QUALITIES[quality]
        self.phase = np.zeros(0, dtype=np.int64)

    def reset(self, done: np.ndarray, rng: np.random.Generator) -> None:
        """New episodes in the sub-envs ``done`` [N] bool: phase, timer and a freshly drawn operator skill."""
        n = len(done)
        if len(self.phase) != n:
            self.phase, self.timer = np.zeros(n, np.int64), np.zeros(n, np.int64)
            self.noise, self.gain, self.pause = np.zeros(n), np.ones(n), np.zeros(n)
            self.offset = np.zeros((n, 3))
            done = np.ones(n, dtype=bool)
        for i in np.flatnonzero(done):
            skill = SKILLS[self.skills[rng.integers(len(self.skills))]]
            self.phase[i], self.timer[i] = APPROACH, 0
            self.noise[i], self.gain[i], self.pause[i] = skill["noise"], skill["gain"], skill["pause"]
            self.offset[i] = rng.normal(0.0, skill["offset"], 3) * (1, 1, 0.5)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator, index: np.ndarray) -> np.ndarray:
        n = len(obs)
        if len(self.phase) != n:
            self.reset(np.ones(n, dtype=bool), rng)
        eef, obj = obs[:, 0:3].astype(np.float64), obs[:, OBJECT_POS[self.task]].astype(np.float64)
        grasp = obj + self.offset
        target, close = eef.copy(), np.zeros(n, dtype=bool)
        self.timer += 1
        for i in range(n):
            target[i], close[i] = self._waypoint(i, eef[i], obj[i], grasp[i])
        move = np.clip(self.gain[:, None] * (target - eef) / 0.05, -1.0, 1.0)  # OSC_POSE: 1 = 0.05 m per step
        move = move + self.noise[:, None] * rng.standard_normal((n, 3))
        move[rng.random(n) < self.pause] = 0.0
        actions = np.zeros((n, 7))
        actions[:, :3] = move
        actions[:, 3:6] = self.noise[:, None] * 0.3 * rng.standard_normal((n, 3))  # orientation held, a little shake
        actions[:, 6] = np.where(close, 1.0, -1.0)
        return np.clip(actions, -1.0, 1.0).astype(np.float32)

    def _next(self, i: int, phase: int) -> None:
        self.phase[i], self.timer[i] = phase, 0

    def _waypoint(self, i: int, eef: np.ndarray, obj: np.ndarray, grasp: np.ndarray) -> tuple[np.ndarray, bool]:
        """Sub-env i's target end-effector position and gripper command; advances its phase."""
        phase, err = self.phase[i], grasp - eef
        held = np.linalg.norm(obj - eef) < 0.03
        if phase in (LIFT, CARRY, LOWER) and not held and self.timer[i] > 5:  # the grasp slipped: start over
            self._next(i, APPROACH)
            phase = APPROACH
        if phase == APPROACH:
            above = grasp + (0, 0, HOVER)
            if np.linalg.norm(above - eef) < 0.015 or (np.linalg.norm(err[:2]) < 0.01 and err[2] < 0):
                self._next(i, DESCEND)
            return above, False
        if phase == DESCEND:
            if np.linalg.norm(err) < 0.008 or self.timer[i] > 40:
                self._next(i, GRASP)
            return grasp, False
        if phase == GRASP:
            if self.timer[i] > 8:
                self._next(i, LIFT)
            return grasp, True
        if phase == LIFT:
            if self.task == "can" and eef[2] > CARRY_Z - 0.02:
                self._next(i, CARRY)
            return np.array([eef[0], eef[1], CARRY_Z if self.task == "can" else obj[2] + 0.2]), True
        above_bin = np.array([CAN_BIN[0], CAN_BIN[1], CARRY_Z])
        if phase == CARRY:
            if np.linalg.norm((above_bin - eef)[:2]) < 0.02:
                self._next(i, LOWER)
            return above_bin, True
        if phase == LOWER:
            if eef[2] < RELEASE_Z + 0.01:
                self._next(i, RELEASE)
            return np.array([CAN_BIN[0], CAN_BIN[1], RELEASE_Z]), True
        if phase == RELEASE:
            if self.timer[i] > 6:
                self._next(i, RETREAT)
            return eef, False
        return np.array([eef[0], eef[1], CARRY_Z + 0.1]), False  # RETREAT: success needs the gripper away from the can
