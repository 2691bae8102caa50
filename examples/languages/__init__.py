"""The issue-21 languages example: ``delivery.yaml``, ``events.jsonl`` and a package function."""
