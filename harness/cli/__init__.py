"""The `harness` command: harness/cli/main.py assembles it from one module per command."""
