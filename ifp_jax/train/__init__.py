"""Training: job config, trainer loop, pure train/eval steps, sharded state, Optax groups, Orbax
checkpoints, metrics, mesh and logical sharding, multi-host init, validation, compile check."""
