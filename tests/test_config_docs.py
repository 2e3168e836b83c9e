"""docs/configuration.md is generated from the config model and config.yaml's comments: it must be current, and
every key of the model must have a comment in config.yaml."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gen_config_docs.py"


def test_configuration_reference_is_current_and_every_key_is_commented():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_comments_belong_to_the_key_below_them():
    sys.path.insert(0, str(SCRIPT.parent))
    from gen_config_docs import yaml_comments

    comments, values = yaml_comments("""\
# file header, not about a key

# Top section.
top:
  # The first key.
  first: ${A:-1}
  second: 2
  nested:
    # Deep.
    deep: x
  rules:
    # about the item, not a key
    - {name: a}
""")
    assert comments == {
        "top": "Top section.",
        "top.first": "The first key.",
        "top.second": "",
        "top.nested": "",
        "top.nested.deep": "Deep.",
        "top.rules": "",
    }
    assert values == {"top.first": "${A:-1}", "top.second": "2", "top.nested.deep": "x"}
