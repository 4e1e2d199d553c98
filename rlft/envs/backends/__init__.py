"""Batched-env backends: gymnasium vector envs, native batched MuJoCo, MJX on the GPU."""
