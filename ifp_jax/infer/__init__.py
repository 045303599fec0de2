"""Inference: KV-cached generation, masks from instructions, the pruned runner, reading a trained
run back."""
