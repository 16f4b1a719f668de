"""linerisk: predict personal credit-line restrictions, explain them, show the way back.

One import name for the whole project: `linerisk.data`, `linerisk.features`,
`linerisk.models` and `linerisk.pipeline` are the repository's top-level folders,
installed under this package (setuptools `package-dir`), so a user's own `models/` or
`data/` package never mixes with ours.
"""
__version__ = "0.1.0"
