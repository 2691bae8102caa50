"""Setup shim for Dataflow workers.

Dataflow installs the job's own code on every worker with ``--setup_file ./setup.py``,
which runs ``python setup.py sdist``. All metadata lives in ``pyproject.toml``; this file
only hands over to setuptools so both paths build the same package.
"""

from setuptools import setup

setup()
