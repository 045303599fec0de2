"""data/batch_text.py: a batch rendered as the text each predictor input reads and the LLM
tokens its mask serves, loss-carrying tokens marked; padding left out."""

import numpy as np

from ifp_jax.data import batch_text
from ifp_jax.data.tokenization import load_tokenizer


def test_rows_show_each_predictor_input_and_the_tokens_its_mask_serves():
  tok = load_tokenizer("bytes")
  # One row, 2 predictor inputs: mask 0 serves "abc", mask 1 serves "de" (loss on "cd"), then
  # 3 padding slots.
  ids = np.array([tok.encode("abcde") + [tok.pad_id] * 3], np.int32)
  weights = np.array([[0, 0, 1, 1, 0, 0, 0, 0]], np.float32)
  mask_index = np.array([[0, 0, 0, 1, 1, 0, 0, 0]], np.int32)
  segments = np.array([[1, 1, 1, 1, 1, 0, 0, 0]], np.int32)
  p_ids = np.full((1, 2, 4), tok.pad_id, np.int32)
  p_ids[0, 0, :2], p_ids[0, 1, :3] = tok.encode("hi"), tok.encode("xyz")
  batch = {
    "input_ids": ids,
    "targets": ids,
    "loss_weights": weights,
    "mask_index": mask_index,
    "segment_ids": segments,
    "predictor_ids": p_ids,
    "predictor_lengths": np.array([[2, 3]], np.int32),
  }
  text = batch_text.render_rows(batch, tok)
  assert "row 0: 5 real tokens of 8, 2 with loss, 2 predictor input(s)" in text
  assert "predictor input 0 (2 tokens): 'hi'" in text
  assert "predictor input 1 (3 tokens): 'xyz'" in text
  assert "\nab⟦c⟧\n" in text  # mask 0 serves a, b, c; c's target carries loss
  assert "\n⟦d⟧e\n" in text
  assert text.index("'hi'") < text.index("ab⟦c⟧") < text.index("'xyz'") < text.index("⟦d⟧e")
