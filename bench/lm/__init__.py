"""Word-level language-model benchmark (python -m bench.lm.train --help)."""
