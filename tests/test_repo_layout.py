"""The README's module map names every module of the package, and only modules that exist."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _mapped_modules() -> set[str]:
  """Paths under ifp_jax/ named in the map: a row's first name sets its room (`train/step.py`,
  `io/export/`), and the bare file names after it in the row live in that room."""
  text = (ROOT / "README.md").read_text()
  section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
  named = set()
  for row in section.splitlines():
    if not row.startswith("|"):
      continue
    cells = row.split("|")
    names = re.findall(r"`([\w/]+(?:\.py|/))`", cells[1])
    if not names or "/" not in names[0]:
      continue
    room = names[0].rstrip("/") if names[0].endswith("/") else names[0].rsplit("/", 1)[0]
    if not (ROOT / "ifp_jax" / room).is_dir():  # configs/, launch/, benchmarks/ rows
      continue
    if names[0].endswith("/"):  # a folder row (io/export/): its files are in the description
      names += re.findall(r"`(\w+\.py)`", cells[2])
    named |= {n if "/" in n else f"{room}/{n}" for n in names if n.endswith(".py")}
  return named


def test_module_map_matches_the_tree():
  package = ROOT / "ifp_jax"
  modules = {str(p.relative_to(package)) for p in package.rglob("*.py") if p.name != "__init__.py"}
  named = _mapped_modules()
  assert not named - modules, f"the README's module map names missing files: {named - modules}"
  assert not modules - named, f"modules missing from the README's module map: {modules - named}"
