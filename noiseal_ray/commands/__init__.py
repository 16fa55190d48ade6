"""CLI command groups, one module each; ``cli.py`` only assembles them.

Modules here must stay cheap to import (no torch/ray/vllm at module level): ``--help`` must be
instant.
"""
