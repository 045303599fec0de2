"""Test setup: 8 fake CPU devices and exact f32 matmuls, set before JAX initialises."""

import os
import pathlib

# XLA:CPU compile-time flags for this session and every process the tests launch (read back
# with train_utils.xla_flags). Most of the suite's time is compiling small programs; LLVM at -O0
# without its expensive passes, and the older elemental emitters instead of the MLIR fusion
# emitters, compile the tiny train step 2-4x faster (8 fake devices, 2 busy cores: 63 s ->
# 41 s -> 14 s). No fast-math: results agree with the default flags to float rounding.
# IFP_JAX_TEST_FAST_COMPILE=0 compiles as users do.
_FAST_COMPILE = (
  "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  " --xla_cpu_use_fusion_emitters=false"
)
# The -O0 code runs slowly, though: SmolLM2's greedy generation 5x, the tiny job's train step
# 2.4x. Processes that run long rather than compile much (train_utils.xla_flags(runtime_bound=))
# get -O1 with the same two other flags: measured side by side on 2 busy cores, the tiny step
# compiles in 13.6 s (default 25, -O0 9.1) and runs at 0.72 s (default 0.75, -O0 1.79), and
# SmolLM2 generates 16 tokens twice in 8.3 s (default 7.8, -O0 40.7).
_RUNTIME_BOUND = _FAST_COMPILE.replace("level=0", "level=1")
_ON = os.environ.get("IFP_JAX_TEST_FAST_COMPILE", "1") != "0"
os.environ.setdefault("IFP_JAX_TEST_XLA_FLAGS", _FAST_COMPILE if _ON else "")
os.environ.setdefault("IFP_JAX_TEST_RUNTIME_XLA_FLAGS", _RUNTIME_BOUND if _ON else "")
os.environ.setdefault(
  "XLA_FLAGS",
  f"--xla_force_host_platform_device_count=8 {os.environ['IFP_JAX_TEST_XLA_FLAGS']}".strip(),
)
# A persistent XLA compilation cache shared by this process and every job the tests launch
# (the same tiny train step is compiled by dozens of subprocesses). Keyed by JAX on the program,
# the backend, the devices and the flags, so a hit is the same executable; '' turns it off.
_CACHE = os.environ.get(
  "IFP_JAX_TEST_COMPILE_CACHE", str(pathlib.Path(__file__).resolve().parents[1] / ".cache" / "jax")
)
if _CACHE:
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """WORKDIR of a short tiny CPT+SFT run (1 device): what eval, generate and export tests load.

  Small (2 layers, 6 CPT + 6 SFT steps) so it trains in seconds; the weights are not good, but
  every code path of a real checkpoint (predictor, masks, tokenizer spec, metadata) is there.
  """
  import train_utils as tu

  from ifp_jax.train.trainer import Trainer

  workdir = tmp_path_factory.mktemp("trained_run")
  config = tu.small_config(
    tu.shared_data_dir(tmp_path_factory),
    mesh=(1, 1, 1),
    cpt__steps=6,
    sft__steps=6,
    train__log_every=3,
  )
  Trainer(config, workdir, devices=jax.devices()[:1]).run()
  return workdir


# Fixtures whose set-up trains a model, loads the real SmolLM2 weights into transformers, or
# compiles sharded train steps (`reports`: three 8-device layouts): every test that uses one is
# slow (`make test-fast` skips it).
SLOW_FIXTURES = frozenset({"trained_run", "hf_model", "smollm2", "reports"})


# Scheduling under pytest-xdist (`--dist loadgroup`, the Makefile's default): a file's tests share
# module fixtures, so they run on one worker, except the files below, whose tests are
# independent minutes-long runs and spread over the workers one by one. Groups start in
# collection order, so the longest go first and no worker is left alone with one at the end.
SPLIT_FILES = frozenset({"test_benchmarks_smoke.py", "test_architectures.py"})
LONGEST_FIRST = (
  "test_benchmarks_smoke.py",
  "test_architectures.py",
  "test_multihost.py",
  "test_repro_smollm2.py",
  "test_train_tiny.py",
  "test_export.py",
  "test_train_faults.py",
  "test_compile_check.py",
  "test_train_resume.py",
  "test_train_guards.py",
  "test_predictor_tokenizer.py",
  "test_configs.py",
  "test_train_mesh.py",
)


def pytest_collection_modifyitems(config, items):
  for item in items:
    if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)
    name = item.path.name
    item.add_marker(pytest.mark.xdist_group(item.nodeid if name in SPLIT_FILES else name))
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda it: rank.get(it.path.name, len(rank)))  # stable: file order kept
