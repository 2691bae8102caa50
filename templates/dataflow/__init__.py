"""The Dataflow Flex Template: launcher (``main.py``), ``metadata.json`` and ``Dockerfile``."""
