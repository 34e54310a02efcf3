"""Inference: the fast sampler (`engine.InferenceEngine`), its FLOP count (`flops`), the action contract
(`actions.check_actions`) and the model + processors predictor eval and serving share (`predictor`).

Nothing is imported here: `actions` is numpy-only and the torch-free server path imports it.
"""
