"""Device mesh ('data', 'fsdp', 'tensor'), logical axis rules, and host -> global batches.

Parameters carry logical names (see decoder.py); these rules map them to mesh axes. Batch
dimensions shard over ('data', 'fsdp'); FFN units ('mlp') over 'tensor', so the masks
[B, C, L, F] shard like the activations they multiply and applying them needs no communication.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
  # parameters
  ("vocab", "tensor"),
  ("embed", "fsdp"),
  ("mlp", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("head_dim", None),
  ("layers", None),
  ("norm", None),
  ("pred_hidden", None),
  # activations
  ("act_batch", BATCH_AXES),
  ("act_len", None),
  ("act_embed", None),
  ("act_mlp", "tensor"),
  ("act_heads", "tensor"),
  ("act_kv_heads", "tensor"),
  ("act_vocab", "tensor"),
)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills one -1 entry so the product equals num_devices; validates the rest."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh shape {shape} does not divide {num_devices} devices")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(
      f"mesh shape {dict(zip(MESH_AXES, shape))} uses {math.prod(shape)} "
      f"devices, but {num_devices} are available"
    )
  return shape


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices=None) -> jax.sharding.Mesh:
  devices = devices if devices is not None else jax.devices()
  shape = resolve_mesh_shape(shape, len(devices))
  return jax.make_mesh(
    shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=devices
  )


def _fit_spec(spec: P, shape: tuple[int, ...], mesh, where: str) -> P:
  """Drops mesh axes from dims they do not divide (replicating that dim), with a warning."""
  if spec is None:
    return P()
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    size = math.prod(mesh.shape[a] for a in names)
    if names and dim % size:
      log.warning(
        "%s: dim %d is not divisible by mesh axes %s (size %d); replicating it",
        where,
        dim,
        names,
        size,
      )
      out.append(None)
    else:
      out.append(axes)
  return P(*out)


def strip_boxes(tree: Any) -> Any:
  """Removes logical-partitioning boxes without applying sharding constraints (safe eagerly)."""
  return jax.tree.map(
    lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x,
    tree,
    is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
  )


def logical_shardings(abstract_boxed: Any, mesh, rules=LOGICAL_RULES) -> Any:
  """NamedShardings for a tree whose leaves are boxed with logical names (others replicated).

  Returns a tree shaped like `strip_boxes(abstract_boxed)`.
  """
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)

  def leaf(path, x):
    if not is_box(x):
      return NamedSharding(mesh, P())
    if not hasattr(x.value, "shape"):  # e.g. optax.MaskedNode inside a box: no leaves
      return x.value
    spec = nn.logical_to_mesh_axes(x.names, rules)
    return NamedSharding(mesh, _fit_spec(spec, x.value.shape, mesh, jax.tree_util.keystr(path)))

  return jax.tree_util.tree_map_with_path(leaf, abstract_boxed, is_leaf=is_box)


def batch_sharding(mesh, ndim: int) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def host_to_global(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Each process passes its own slice [B_host, ...]; returns global arrays [B_global, ...]."""
  out = {}
  for name, x in batch.items():
    x = np.asarray(x)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    out[name] = jax.make_array_from_process_local_data(
      batch_sharding(mesh, x.ndim), x, global_shape
    )
  return out


def cpu_safe_unroll(cfg, mesh):
  """Fully unrolls the layer scan on multi-device CPU meshes (see LlamaConfig.scan_unroll)."""
  if mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu":
    return cfg.replace(scan_unroll=cfg.num_hidden_layers)
  return cfg
