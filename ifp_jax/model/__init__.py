"""The model: architecture configs, layers, masked decoder, sparsity predictor, masking, IFP model,
gather (kept units -> dense width-k weights). Pure functions and Linen modules; no I/O."""
