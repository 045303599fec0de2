"""Weights in and out: HF directories, GGUF import, HF/PyTorch export, the torch-only predictor."""
