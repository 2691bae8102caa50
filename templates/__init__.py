"""Packaging templates, as data (YAML). Never code: see transforms.rules.package."""
