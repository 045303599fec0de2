"""Evaluation with pruned inference (launch.eval): benchmarks, variants and mask analysis.

suite.py           variants x benchmarks -> results.json / results.md / PNGs (the engine)
perplexity.py      held-out CPT perplexity through the masked model
skill_suite.py     built-in skills: exact match per skill and domain
math_gym.py        reasoning-gym math on held-out seeds, its own scorer
humaneval.py       HumanEval pass@1, executed by sandbox.py (own process, limits, timeout)
mmlu.py            MMLU log-likelihood of the answer letter, 0/5-shot, per subject group
masks_analysis.py  per-layer overlap between domains, selection entropy, unused units
report.py          results.json / results.md / bar charts
common.py          the per-variant context, task instructions, prompt fitting, progress bar
"""
