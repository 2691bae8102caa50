"""The five stages (route, filter, package, deliver, retry) as Beam transforms.

The rules they apply are plain Python in :mod:`transforms.rules`.
"""
