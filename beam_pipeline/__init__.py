"""The delivery job: command line, options, config validation and pipeline assembly."""
